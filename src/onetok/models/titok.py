"""TiTok: a ViT that reads patches plus K latent tokens and keeps only the latents."""
from __future__ import annotations

import torch
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import nn

from ..config import VIT_SIZES, TiTokConfig, VQGANConfig
from ..pretrained import HubMixin
from ..precision import autocast
from .quantizers import DiagonalGaussianPosterior, VectorQuantizer
from .vit import ResidualAttentionBlock, init_reference_weights
from .vqgan import VQGANDecoder
from ..errors import TokenizerError

PROXY_CODEBOOK_SIZE = 1024  # MaskGIT-VQGAN codes predicted by the legacy decoder


def _embedding(*shape: int, width: int) -> nn.Parameter:
    return nn.Parameter(width**-0.5 * torch.randn(*shape))


class _ViTStack(nn.Module):
    """ln_pre -> blocks (ln_post is applied by the caller to the positions it keeps)."""

    def _build_stack(self, width: int, depth: int, heads: int) -> None:
        # called mid-__init__ so parameters register in the released checkpoints' order
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(depth))
        self.ln_post = nn.LayerNorm(width)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_pre(x)
        for block in self.transformer:
            x = block(x)
        return x


class TiTokEncoder(_ViTStack):
    def __init__(self, cfg: TiTokConfig):
        super().__init__()
        width, depth, heads = VIT_SIZES[cfg.vit_enc_model_size]
        self.is_legacy = cfg.is_legacy
        grid = cfg.crop_size // cfg.vit_enc_patch_size
        out_channels = cfg.token_size * (2 if cfg.is_vae else 1)
        self.class_embedding = _embedding(1, width, width=width)
        self.positional_embedding = _embedding(grid * grid + 1, width, width=width)
        self.latent_token_positional_embedding = _embedding(cfg.num_latent_tokens, width, width=width)
        self.patch_embed = nn.Conv2d(3, width, cfg.vit_enc_patch_size, stride=cfg.vit_enc_patch_size)
        self._build_stack(width, depth, heads)
        self.conv_out = nn.Conv2d(width, out_channels, 1)

    def forward(self, pixels: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), (K, W) -> (B, C, 1, K)."""
        b = pixels.shape[0]
        patches = rearrange(self.patch_embed(pixels), "b w h ww -> b (h ww) w")
        cls = self.class_embedding.to(patches.dtype).expand(b, -1, -1)
        x = torch.cat([cls, patches], dim=1) + self.positional_embedding.to(patches.dtype)
        latents = (latent_tokens + self.latent_token_positional_embedding).to(x.dtype).expand(b, -1, -1)
        num_latents = latents.shape[1]
        x = self.run(torch.cat([x, latents], dim=1))
        x = self.ln_post(x[:, -num_latents:])
        if self.is_legacy:
            # the released two-stage models reinterpret (K, W) memory as (W, K): keep it
            x = x.reshape(b, -1, num_latents, 1)
        else:
            x = rearrange(x, "b k w -> b w k 1")
        return self.conv_out(x).reshape(b, -1, 1, num_latents)


def _conv_pixel_head(width: int, patch: int, channels: int) -> nn.Sequential:
    """Decoder grid (B, W, g, g) -> features (B, channels/2, H, W) for a final 3x3 conv.

    The per-patch linear map only reaches a grid 4x coarser than the pixels; two 3x3 conv +
    pixel-shuffle (x2) stages then build the last two octaves from neighbouring patches, so
    patch borders do not show as seams. Channels stay small: this runs at full resolution.
    """
    coarse, half = patch // 4, channels // 2
    return nn.Sequential(
        nn.Conv2d(width, coarse * coarse * channels, 1),
        Rearrange("b (p1 p2 c) h w -> b c (h p1) (w p2)", p1=coarse, p2=coarse),
        nn.Conv2d(channels, 4 * half, 3, padding=1), nn.PixelShuffle(2), nn.GELU(),
        nn.Conv2d(half, 4 * half, 3, padding=1), nn.PixelShuffle(2), nn.GELU(),
    )


class TiTokDecoder(_ViTStack):
    def __init__(self, cfg: TiTokConfig):
        super().__init__()
        width, depth, heads = VIT_SIZES[cfg.vit_dec_model_size]
        self.is_legacy = cfg.is_legacy
        self.grid = cfg.crop_size // cfg.vit_dec_patch_size
        patch = cfg.vit_dec_patch_size
        self.class_embedding = _embedding(1, width, width=width)
        self.positional_embedding = _embedding(self.grid**2 + 1, width, width=width)
        self.mask_token = _embedding(1, 1, width, width=width)
        self.latent_token_positional_embedding = _embedding(cfg.num_latent_tokens, width, width=width)
        self.decoder_embed = nn.Linear(cfg.token_size, width)
        self._build_stack(width, depth, heads)
        if self.is_legacy:
            # logits over the MaskGIT-VQGAN codes at every grid position
            self.ffn = nn.Sequential(
                nn.Conv2d(width, 2 * width, 1), nn.Tanh(), nn.Conv2d(2 * width, PROXY_CODEBOOK_SIZE, 1)
            )
            self.conv_out = nn.Identity()
        elif cfg.decoder_head == "conv":
            self.ffn = _conv_pixel_head(width, patch, cfg.decoder_head_channels)
            self.conv_out = nn.Conv2d(cfg.decoder_head_channels // 2, 3, 3, padding=1)
        else:
            self.ffn = nn.Sequential(
                nn.Conv2d(width, patch * patch * 3, 1),
                Rearrange("b (p1 p2 c) h w -> b c (h p1) (w p2)", p1=patch, p2=patch),
            )
            self.conv_out = nn.Conv2d(3, 3, 3, padding=1)
        self.num_latent_tokens = cfg.num_latent_tokens
        if cfg.variable_length:  # only then: every released layout loads strictly
            self.null_token = _embedding(1, 1, width, width=width)


    def forward(self, z_quantized: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, 1, k) -> proxy-code logits (B, 1024, g, g) or pixels (B, 3, H, W).

        A prefix k < K is padded to K with the learned null token; ``keep`` (B, K) bool replaces
        the positions it marks False by it too (training's tail-token drop: one fixed-shape graph).
        A model without a null token reads the k tokens alone (as One-D-Piece decodes).
        """
        b, _, h, k = z_quantized.shape
        if h != 1 or not 1 <= k <= self.num_latent_tokens:
            raise TokenizerError(
                f"decoder expects latents of shape (B, C, 1, k), 1 <= k <= {self.num_latent_tokens}, "
                f"got {tuple(z_quantized.shape)}"
            )
        latents = self.decoder_embed(rearrange(z_quantized, "b c 1 k -> b k c"))
        if hasattr(self, "null_token"):
            null = self.null_token.to(latents.dtype)
            if k < self.num_latent_tokens:
                latents = torch.cat([latents, null.expand(b, self.num_latent_tokens - k, -1)], dim=1)
            if keep is not None:
                latents = torch.where(keep[:, :, None], latents, null)
        elif keep is not None:
            raise TokenizerError("a keep mask needs the null token: build the model with variable_length=True")
        latents = latents + self.latent_token_positional_embedding[: latents.shape[1]].to(latents.dtype)
        masks = self.mask_token.to(latents.dtype).expand(b, self.grid**2, -1)
        cls = self.class_embedding.to(latents.dtype).expand(b, -1, -1)
        masks = torch.cat([cls, masks], dim=1) + self.positional_embedding.to(latents.dtype)
        x = self.run(torch.cat([masks, latents], dim=1))
        x = self.ln_post(x[:, 1 : 1 + self.grid**2])
        x = rearrange(x, "b (h w) c -> b c h w", h=self.grid)
        return self.conv_out(self.ffn(x))


class TiTok(HubMixin, nn.Module):
    """The TiTok tokenizer: encode, quantize, decode (weights load through HubMixin)."""

    config_class = TiTokConfig

    def __init__(self, config: TiTokConfig):
        super().__init__()
        self.config = config
        enc_width = VIT_SIZES[config.vit_enc_model_size][0]
        self.encoder = TiTokEncoder(config)
        self.decoder = TiTokDecoder(config)
        self.latent_tokens = _embedding(config.num_latent_tokens, enc_width, width=enc_width)
        self.apply(init_reference_weights)
        if config.decoder_head == "conv":  # ours: torch's fan-in init, 0.02 would mute the stacked convs
            for layer in [*self.decoder.ffn, self.decoder.conv_out]:
                if isinstance(layer, nn.Conv2d):
                    layer.reset_parameters()
        # created after the model-wide init, as in the reference, so they keep their own init
        if not config.is_vae:
            self.quantize = VectorQuantizer(
                config.codebook_size, config.token_size, config.commitment_cost, config.use_l2_norm
            )
        if config.finetune_decoder:
            self.pixel_quantize = VectorQuantizer(PROXY_CODEBOOK_SIZE, config.pixel_z_channels)
            self.pixel_decoder = VQGANDecoder(
                VQGANConfig(hidden_channels=config.pixel_hidden_channels, z_channels=config.pixel_z_channels,
                            embedding_dim=config.pixel_z_channels)
            )

    # ------------------------------------------------------------ reference API
    def encode(self, pixels: torch.Tensor, quantize: bool = True):
        """VQ: (z_quantized (B, C, 1, K), dict); VAE: (sample, posterior).

        ``quantize=False`` skips the code lookup (latents only l2-normalised): the
        continuous warm-up of training, before the codebook is seeded from the latents.
        """
        z = self.encoder(pixels, self.latent_tokens)
        if self.config.is_vae:
            posterior = DiagonalGaussianPosterior(z)
            return posterior.sample(), posterior
        return self.quantize(z) if quantize else self.quantize.bypass(z)

    def decode(self, z_quantized: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, C, 1, k), 1 <= k <= K -> pixels (unclamped), or proxy-code logits for a stage-1 model.

        ``keep`` (B, K) bool: positions marked False are replaced by the null token.
        """
        decoded = self.decoder(z_quantized, keep)
        if not self.config.finetune_decoder:
            return decoded
        weights = decoded.softmax(dim=1)
        soft_latents = torch.einsum("nchw,cd->ndhw", weights, self.pixel_quantize.embedding.weight.to(weights.dtype))
        return self.pixel_decoder(soft_latents)

    def decode_tokens(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Ids (B, k) / (B, 1, k), or VAE latents (B, C, 1, k), 1 <= k <= K -> raw decoder output.

        ``keep`` (B, K) bool: as in `decode` (ids where it is False are replaced by the null token).
        """
        if self.config.is_vae:
            return self.decode(tokens, keep)
        ids = tokens.reshape(tokens.shape[0], -1)
        codes = self.quantize.get_codebook_entry(ids.reshape(-1))
        z_quantized = rearrange(codes, "(b k) c -> b c 1 k", b=ids.shape[0])
        return self.decode(z_quantized.to(self.decoder.decoder_embed.weight.dtype), keep)

    def forward(self, pixels: torch.Tensor, quantize: bool = True, keep: torch.Tensor | None = None):
        z_quantized, result = self.encode(pixels, quantize)
        return self.decode(z_quantized, keep), result

    # ------------------------------------------------------------ friendly API
    def check_images(self, images: torch.Tensor) -> None:
        size = self.config.crop_size
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise TokenizerError(f"expected images of shape (B, 3, {size}, {size}), got {shape}")
        if images.shape[-2:] != (size, size):
            raise TokenizerError(
                f"this tokenizer reads {size}x{size} images, got {images.shape[-2]}x{images.shape[-1]}; "
                "resize and center-crop first (onetok.data.images.load_image does)"
            )

    def check_num_tokens(self, num_tokens: int) -> int:
        k = self.config.num_latent_tokens
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or not 1 <= num_tokens <= k:
            raise TokenizerError(f"num_tokens must be an integer in [1, {k}], got {num_tokens!r}")
        return num_tokens

    def check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Ids (B, k) / (B, 1, k), or VAE latents (B, k, C) / (B, C, 1, k): any prefix 1 <= k <= K."""
        k = self.config.num_latent_tokens
        if self.config.is_vae:
            if tokens.dim() == 3:  # (B, k, C) posterior means from tokenize()
                tokens = rearrange(tokens, "b k c -> b c 1 k")
            if tokens.dim() != 4 or tokens.shape[1:3] != (self.config.token_size, 1) or not 1 <= tokens.shape[3] <= k:
                raise TokenizerError(
                    f"expected VAE tokens (B, k, {self.config.token_size}) with 1 <= k <= {k}, got {tuple(tokens.shape)}"
                )
            return tokens.float()
        if tokens.is_floating_point() or tokens.dim() not in (2, 3):
            raise TokenizerError(f"expected integer token ids of shape (B, {k}), got {tuple(tokens.shape)} {tokens.dtype}")
        ids = tokens.reshape(tokens.shape[0], -1)
        if not 1 <= ids.shape[1] <= k:
            raise TokenizerError(f"this tokenizer reads 1 to {k} tokens per image, got {ids.shape[1]}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.config.codebook_size:
            raise TokenizerError(f"token ids must lie in [0, {self.config.codebook_size - 1}], got values in [{lo}, {hi}]")
        return ids.long()

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor, precision: str = "fp32", num_tokens: int | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> ids (B, k); VAE: posterior means (B, k, C).

        ``num_tokens`` k (default K) keeps the first k tokens: the encoder always reads all K
        latent positions, so the result is the first k of the full tokenization.
        ``precision`` "bf16" (or "auto") runs the ViT under bfloat16 autocast; the
        nearest-code search stays float32.
        """
        self.check_images(images)
        k = self.config.num_latent_tokens if num_tokens is None else self.check_num_tokens(num_tokens)
        with autocast(precision, images.device):
            z = self.encoder(images.to(self.latent_tokens.dtype), self.latent_tokens)
        if self.config.is_vae:
            return rearrange(DiagonalGaussianPosterior(z).mode(), "b c 1 k -> b k c")[:, :k]
        return self.quantize(z)[1]["min_encoding_indices"].reshape(images.shape[0], -1)[:, :k]

    @torch.no_grad()
    def detokenize(self, tokens: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """Ids (B, k) (or VAE latents (B, k, C)), 1 <= k <= K -> images (B, 3, H, W) clamped to [0, 1].

        The positions past k get the learned null token of a model trained with tail-token
        drop (``config.variable_length``). A model without one decodes the k tokens alone: it
        still answers, but unless it was trained on prefixes (One-D-Piece) the quality is poor.
        """
        if self.config.is_stage1:
            raise TokenizerError(
                "a stage-1 model predicts proxy codes, not pixels: decode its logits with a MaskGIT-VQGAN"
            )
        with autocast(precision, tokens.device):
            return self.decode_tokens(self.check_tokens(tokens)).float().clamp(0.0, 1.0)
