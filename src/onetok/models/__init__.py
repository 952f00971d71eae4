"""Pure nn.Modules: TiTok tokenizers, the MaskGIT-VQGAN and the MaskGIT generators."""
from .bert import ImageBert
from .maskgit import MaskGIT, mask_schedule
from .quantizers import DiagonalGaussianPosterior, VectorQuantizer
from .titok import TiTok
from .uvit import UViTBert
from .vqgan import MaskGITVQGAN

__all__ = ["TiTok", "MaskGIT", "ImageBert", "UViTBert", "MaskGITVQGAN", "VectorQuantizer",
           "DiagonalGaussianPosterior", "mask_schedule"]
