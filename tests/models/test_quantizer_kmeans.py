"""k-means codebook seeding: centroids land on the clusters of the latents."""
import torch
import torch.nn.functional as F

from onetok.models.quantizers import VectorQuantizer, kmeans_codebook


def test_kmeans_finds_separated_clusters_on_the_sphere():
    generator = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(4, 12, generator=generator), dim=1)
    latents = torch.cat([c + 0.01 * torch.randn(200, 12, generator=generator) for c in centres])
    codes = kmeans_codebook(latents, 4, iterations=20, generator=torch.Generator().manual_seed(1))
    assert codes.shape == (4, 12)
    assert torch.allclose(codes.norm(dim=1), torch.ones(4), atol=1e-5)
    # every true centre has a code within a small angle (random seeding may split one cluster,
    # so check the 3 best-matched centres at least, and the mean match overall)
    similarity = (centres @ codes.t()).max(dim=1).values
    assert (similarity > 0.99).sum() >= 3 and similarity.mean() > 0.9


def test_kmeans_with_fewer_latents_than_codes_still_fills_the_codebook():
    latents = torch.randn(5, 12)
    codes = kmeans_codebook(latents, 16, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (16, 12) and torch.isfinite(codes).all()


def test_bypass_normalises_without_lookup_and_keeps_the_codebook_in_the_graph():
    quantizer = VectorQuantizer(32, 12, use_l2_norm=True)
    z = torch.randn(2, 12, 1, 8, requires_grad=True)
    latents, result = quantizer.bypass(z)
    assert torch.allclose(latents.norm(dim=1), torch.ones(2, 1, 8), atol=1e-5)
    (latents.sum() + result["quantizer_loss"]).backward()
    assert z.grad is not None and quantizer.embedding.weight.grad is not None
    assert torch.equal(quantizer.embedding.weight.grad, torch.zeros_like(quantizer.embedding.weight))
