"""PSNR and SSIM against scikit-image on real photos and degraded copies of them."""
import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from onetok.evaluation.image_metrics import psnr, quantize_8bit, ssim


def jpeg(photo: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def noisy(photo: np.ndarray, rng, scale: float) -> np.ndarray:
    return np.clip(photo + rng.normal(0, scale, photo.shape), 0, 255).round().astype(np.uint8)


def to_tensor(photo: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 255


def degraded_pairs(photos):
    rng = np.random.default_rng(0)
    for photo in photos:
        photo = photo[:160, :200]  # keep the test fast; odd sizes are fine
        yield photo, jpeg(photo, 20)
        yield photo, noisy(photo, rng, 12.0)


def test_psnr_and_ssim_match_skimage(sample_photos):
    for ref, test in degraded_pairs(sample_photos):
        a, b = ref / 255.0, test / 255.0
        expected_psnr = peak_signal_noise_ratio(a, b, data_range=1)
        expected_ssim = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              data_range=1, channel_axis=2)
        assert psnr(to_tensor(ref), to_tensor(test)).item() == pytest.approx(expected_psnr, abs=1e-4)
        assert ssim(to_tensor(ref), to_tensor(test)).item() == pytest.approx(expected_ssim, abs=1e-6)
        assert 0 < expected_ssim < 0.99


def test_batched_equals_one_by_one(sample_photos):
    pairs = [(r[:128, :128], t[:128, :128]) for r, t in degraded_pairs(sample_photos[:2])]
    refs = torch.cat([to_tensor(r) for r, _ in pairs])
    tests = torch.cat([to_tensor(t) for _, t in pairs])
    single = torch.stack([ssim(to_tensor(r), to_tensor(t))[0] for r, t in pairs])
    torch.testing.assert_close(ssim(refs, tests), single)


def test_identical_images_and_quantisation(sample_photos):
    x = to_tensor(sample_photos[0][:64, :64])
    assert torch.isinf(psnr(x, x)).all()
    assert ssim(x, x).item() == pytest.approx(1.0)
    # Sub-level differences vanish under 8-bit quantisation.
    assert torch.isinf(psnr(x, x + 0.4 / 255)).all()
    assert torch.equal(quantize_8bit(torch.tensor([-0.2, 0.5, 1.3])), torch.tensor([0.0, 128 / 255, 1.0]))


def test_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
