"""Vector quantizer (TiTok and MaskGIT-VQGAN) and the VAE's Gaussian posterior."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class VectorQuantizer(nn.Module):
    """Nearest-code quantizer with a straight-through estimator.

    With ``use_l2_norm`` both latents and codes live on the unit sphere (the
    released TiTok models); otherwise plain Euclidean (vq8k, MaskGIT-VQGAN).
    Runs in float32 whatever the autocast context: the argmin over a 4096 x 12
    codebook is where low precision would flip ids.
    """

    def __init__(self, codebook_size: int, token_size: int, commitment_cost: float = 0.25, use_l2_norm: bool = False):
        super().__init__()
        self.commitment_cost = commitment_cost
        self.use_l2_norm = use_l2_norm
        self.embedding = nn.Embedding(codebook_size, token_size)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    @property
    def codebook_size(self) -> int:
        return self.embedding.num_embeddings

    def codebook(self) -> torch.Tensor:
        codes = self.embedding.weight.float()
        return F.normalize(codes, dim=-1) if self.use_l2_norm else codes

    def nearest_codes(self, latents: torch.Tensor) -> torch.Tensor:
        """(M, C) float32 latents -> (M,) ids of the nearest codes."""
        codes = self.codebook()
        distances = (
            latents.pow(2).sum(dim=1, keepdim=True)
            + codes.pow(2).sum(dim=1)
            - 2 * torch.einsum("md,dn->mn", latents, codes.t())
        )
        return distances.argmin(dim=1)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """z (B, C, H, W) -> (quantized z with straight-through gradient, result dict)."""
        z = rearrange(z.float(), "b c h w -> b h w c")
        if self.use_l2_norm:
            z = F.normalize(z, dim=-1)
        ids = self.nearest_codes(rearrange(z, "b h w c -> (b h w) c"))
        z_quantized = self.codebook()[ids].view_as(z)

        commitment_loss = self.commitment_cost * torch.mean((z_quantized.detach() - z) ** 2)
        codebook_loss = torch.mean((z_quantized - z.detach()) ** 2)
        z_quantized = z + (z_quantized - z).detach()
        result = {
            "quantizer_loss": commitment_loss + codebook_loss,
            "commitment_loss": commitment_loss,
            "codebook_loss": codebook_loss,
            "min_encoding_indices": ids.view(z.shape[:-1]),
        }
        return rearrange(z_quantized, "b h w c -> b c h w"), result

    def bypass(self, z: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """z (B, C, H, W) -> (z as the quantizer sees it, without the lookup; result dict).

        The zero loss term keeps the codebook in the autograd graph, so DDP finds every
        parameter used during a continuous warm-up.
        """
        latents = F.normalize(z.float(), dim=1) if self.use_l2_norm else z.float()
        return latents, {"quantizer_loss": 0.0 * self.embedding.weight.sum(), "latents": latents.detach()}

    def get_codebook_entry(self, indices: torch.Tensor) -> torch.Tensor:
        """Ids (M,) -> code rows (M, C); or weights (M, N) over codes -> their mixture (M, C)."""
        if indices.dim() == 1:
            return self.codebook()[indices]
        if indices.dim() == 2:
            mixed = indices.float() @ self.embedding.weight.float()
            return F.normalize(mixed, dim=-1) if self.use_l2_norm else mixed
        raise ValueError(f"expected ids (M,) or code weights (M, N), got shape {tuple(indices.shape)}")


class DiagonalGaussianPosterior:
    """The VAE tokens' posterior: mean and log-variance split along channels."""

    def __init__(self, parameters: torch.Tensor):
        self.mean, logvar = parameters.float().chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL to N(0, I) summed over channels and height: (B, K)."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=[1, 2])


def kmeans_codebook(latents: torch.Tensor, num_codes: int, iterations: int = 10, spherical: bool = True,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """(M, C) latents -> (num_codes, C) centroids (Lloyd's algorithm, cosine on the sphere).

    Seeds a codebook where the encoder's latents actually are: a random codebook has
    one code per Voronoi cell far wider than the latents' spread early in training,
    so every image would map to the same ids. Clusters left empty keep their seed.
    """
    latents = latents.float()
    if spherical:
        latents = F.normalize(latents, dim=1)
    seeds = torch.randperm(len(latents), generator=generator)[:num_codes]
    if len(seeds) < num_codes:  # fewer latents than codes: reuse them, jittered apart
        extra = torch.randint(len(latents), (num_codes - len(seeds),), generator=generator)
        seeds = torch.cat([seeds, extra])
    centroids = latents[seeds] + 1e-3 * torch.randn(num_codes, latents.shape[1], generator=generator)
    for _ in range(iterations):
        if spherical:
            centroids = F.normalize(centroids, dim=1)
            assign = (latents @ centroids.t()).argmax(dim=1)
        else:
            assign = torch.cdist(latents, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, latents)
        counts = torch.bincount(assign, minlength=num_codes).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return F.normalize(centroids, dim=1) if spherical else centroids
