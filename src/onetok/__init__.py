"""onetok: compact 1D image tokenization (TiTok) and fast MaskGIT generation."""
from .config import PRESETS, GeneratorConfig, TiTokConfig, preset
from .models import ImageBert, MaskGIT, MaskGITVQGAN, TiTok, UViTBert, mask_schedule
from .pipeline import Pipeline

__version__ = "0.1.0"
__all__ = ["Pipeline", "TiTok", "MaskGIT", "ImageBert", "UViTBert", "MaskGITVQGAN", "TiTokConfig",
           "GeneratorConfig", "PRESETS", "preset", "mask_schedule"]
