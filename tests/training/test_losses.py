"""Training losses against hand computations."""
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from onetok.data.images import pil_to_tensor, resize_center_crop
from onetok.training.losses import (
    LeCAM,
    LossConfigError,
    MaskedTokenLoss,
    ProxyCodeLoss,
    ReconstructionLoss,
    generator_adversarial_loss,
    hinge_discriminator_loss,
)


@pytest.fixture
def images(sample_photos):
    return torch.stack([pil_to_tensor(resize_center_crop(Image.fromarray(p), 32)) for p in sample_photos[:2]])


def blurred(images):
    return F.avg_pool2d(images, 5, stride=1, padding=2, count_include_pad=False)


# --------------------------------------------------------------------------- GAN terms


def test_hinge_loss_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - x): 0, 0.5, 2   -> mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.5])  # relu(1 + x): 0, 1, 2.5   -> mean 7/6
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 7 / 6))
    assert hinge_discriminator_loss(torch.full((4,), 3.0), torch.full((4,), -3.0)).item() == 0.0


def test_generator_adversarial_loss_is_minus_mean():
    assert generator_adversarial_loss(torch.tensor([1.0, -3.0, 0.5])).item() == pytest.approx(0.5)


def test_lecam_with_known_ema_values():
    lecam = LeCAM(decay=0.999)
    lecam.ema_real.fill_(0.5)
    lecam.ema_fake.fill_(-0.2)
    real = torch.tensor([0.8, 1.2], requires_grad=True)  # mean 1.0
    fake = torch.tensor([0.1, 0.5], requires_grad=True)  # mean 0.3
    loss = lecam(real, fake)
    # relu(1.0 - (-0.2))^2 + relu(0.5 - 0.3)^2
    assert loss.item() == pytest.approx(1.2**2 + 0.2**2)
    assert lecam.ema_real.item() == pytest.approx(0.999 * 0.5 + 0.001 * 1.0)
    assert lecam.ema_fake.item() == pytest.approx(0.999 * -0.2 + 0.001 * 0.3)
    loss.backward()  # gradients use the pre-update EMAs: d/d real_i = 2 * 1.2 / 2
    assert torch.allclose(real.grad, torch.full((2,), 1.2))
    assert torch.allclose(fake.grad, torch.full((2,), -0.2))


def test_lecam_is_zero_inside_the_margin():
    lecam = LeCAM()
    lecam.ema_real.fill_(-1.0)
    lecam.ema_fake.fill_(2.0)
    assert lecam(torch.tensor([1.0]), torch.tensor([0.0])).item() == 0.0


def test_lecam_state_round_trips_through_a_state_dict():
    lecam = LeCAM()
    for _ in range(3):
        lecam(torch.tensor([2.0]), torch.tensor([-1.0]))
    restored = LeCAM()
    restored.load_state_dict(lecam.state_dict())
    assert restored.ema_real.item() == pytest.approx(2.0 * (1 - 0.999**3))
    assert restored.ema_fake.item() == pytest.approx(-1.0 * (1 - 0.999**3))


# --------------------------------------------------------------------------- stage 1


def test_proxy_code_loss_by_hand():
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]]).T.reshape(1, 3, 1, 2)  # V=3, 1x2 grid
    codes = torch.tensor([[2, 1]])

    def nll(row, target):
        return -(row[target] - math.log(sum(math.exp(v) for v in row)))

    expected_ce = (nll([0.0, 1.0, 2.0], 2) + nll([3.0, 0.0, -1.0], 1)) / 2
    quant = {"quantizer_loss": torch.tensor(0.4), "commitment_loss": torch.tensor(0.1), "codebook_loss": torch.tensor(0.3)}
    total, logs = ProxyCodeLoss(quantizer_weight=0.5)(logits, codes, quant)
    assert total.item() == pytest.approx(expected_ce + 0.2, rel=1e-6)
    assert logs["reconstruction_loss"].item() == pytest.approx(expected_ce, rel=1e-6)
    assert logs["commitment_loss"].item() == pytest.approx(0.1)


def test_proxy_code_loss_starts_near_log_codebook_size():
    total, _ = ProxyCodeLoss()(torch.zeros(2, 1024, 4, 4), torch.randint(0, 1024, (2, 16)), {"quantizer_loss": torch.tensor(0.0)})
    assert total.item() == pytest.approx(math.log(1024), rel=1e-5)


def test_proxy_code_loss_rejects_mismatched_shapes():
    with pytest.raises(LossConfigError, match="do not match"):
        ProxyCodeLoss()(torch.zeros(2, 1024, 4, 4), torch.zeros(2, 15, dtype=torch.long), {"quantizer_loss": torch.tensor(0.0)})


# --------------------------------------------------------------------------- quantizer


def test_quantizer_straight_through_gradient_and_losses():
    quantizers = pytest.importorskip("onetok.models.quantizers")
    vq = quantizers.VectorQuantizer(codebook_size=16, token_size=4, commitment_cost=0.25)
    z = torch.randn(2, 4, 1, 8, requires_grad=True)
    zq, result = vq(z)
    codes = vq.embedding.weight[result["min_encoding_indices"].flatten()]
    z_rows = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    # Forward: nearest codes; losses by hand.
    assert torch.allclose(zq.detach().permute(0, 2, 3, 1).reshape(-1, 4), codes.detach())
    assert result["commitment_loss"].item() == pytest.approx(0.25 * (codes.detach() - z_rows).pow(2).mean().item(), rel=1e-5)
    assert result["codebook_loss"].item() == pytest.approx((codes.detach() - z_rows).pow(2).mean().item(), rel=1e-5)
    # Backward: the output passes gradients to z unchanged and none to the codebook.
    weight = torch.randn_like(zq)
    (zq * weight).sum().backward()
    assert torch.allclose(z.grad, weight)
    assert vq.embedding.weight.grad is None or vq.embedding.weight.grad.abs().sum() == 0


# --------------------------------------------------------------------------- stage 2 / single stage


def test_reconstruction_loss_before_discriminator_start(images):
    recon = blurred(images)
    loss_fn = ReconstructionLoss(perceptual_loss=None, quantizer_weight=0.5, discriminator_start=100)
    quant = {"quantizer_loss": torch.tensor(0.2), "commitment_loss": torch.tensor(0.04), "codebook_loss": torch.tensor(0.16)}
    total, logs = loss_fn(images, recon, quant, step=99)
    mse = ((images - recon) ** 2).mean()
    assert total.item() == pytest.approx(mse.item() + 0.1, rel=1e-5)
    assert logs["discriminator_factor"].item() == 0.0 and "gan_loss" not in logs
    assert set(logs) >= {"total_loss", "reconstruction_loss", "quantizer_loss", "commitment_loss", "codebook_loss"}
    l1_total, _ = ReconstructionLoss("l1", 2.0, perceptual_loss=None, discriminator_weight=0)(images, recon, None)
    assert l1_total.item() == pytest.approx(2.0 * (images - recon).abs().mean().item(), rel=1e-5)


def test_generator_side_gan_term_after_start(images):
    loss_fn = ReconstructionLoss(perceptual_loss=None, discriminator_weight=0.01, discriminator_factor=2.0, discriminator_start=5)
    recon = blurred(images).requires_grad_(True)
    total, logs = loss_fn(images, recon, {"quantizer_loss": torch.tensor(0.0)}, step=5)
    with torch.no_grad():
        expected_gan = -loss_fn.discriminator(recon).mean()
    assert logs["gan_loss"].item() == pytest.approx(expected_gan.item(), rel=1e-5)
    mse = ((images - recon.detach()) ** 2).mean()
    assert total.item() == pytest.approx(mse.item() + 0.02 * expected_gan.item(), rel=1e-4, abs=1e-7)
    total.backward()
    assert recon.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.discriminator.parameters())  # D untouched by G's loss
    assert all(p.requires_grad for p in loss_fn.discriminator.parameters())  # and left trainable


def test_discriminator_loss_is_hinge_plus_lecam_by_hand(images):
    loss_fn = ReconstructionLoss(perceptual_loss=None, lecam_regularization_weight=0.001, discriminator_start=10)
    recon = blurred(images).requires_grad_(True)
    with torch.no_grad():
        real, fake = loss_fn.discriminator(images), loss_fn.discriminator(recon)
    hinge = 0.5 * ((1 - real).clamp(min=0).mean() + (1 + fake).clamp(min=0).mean())
    lecam = (real.mean() - 0).clamp(min=0) ** 2 + (0 - fake.mean()).clamp(min=0) ** 2  # EMAs start at 0
    total, logs = loss_fn(images, recon, step=10, mode="discriminator")
    assert total.item() == pytest.approx(hinge.item() + 0.001 * lecam.item(), rel=1e-5)
    assert loss_fn.lecam.ema_real.item() == pytest.approx(0.001 * real.mean().item(), rel=1e-5)
    total.backward()
    assert recon.grad is None  # reconstructions are detached for D's step
    assert all(p.grad is not None for p in loss_fn.discriminator.parameters())
    _, logs = loss_fn(images, recon, step=9, mode="discriminator")
    assert logs["hinge_loss"].item() == 0.0


def test_vae_kl_term(images):
    quantizers = pytest.importorskip("onetok.models.quantizers")
    params = torch.randn(2, 32, 1, 8)
    posterior = quantizers.DiagonalGaussianPosterior(params)
    mean, logvar = params.chunk(2, dim=1)
    kl_by_hand = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum() / 2
    loss_fn = ReconstructionLoss(perceptual_loss=None, discriminator_weight=0, quantize_mode="vae", kl_weight=1e-3)
    total, logs = loss_fn(images, images, {"posterior": posterior})
    assert logs["kl_loss"].item() == pytest.approx(1e-3 * kl_by_hand.item(), rel=1e-5)
    assert total.item() == pytest.approx(1e-3 * kl_by_hand.item(), rel=1e-5)


def test_losses_are_float32_under_autocast(images):
    loss_fn = ReconstructionLoss(perceptual_loss=None, discriminator_start=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = loss_fn(images.bfloat16(), blurred(images).bfloat16(), {"quantizer_loss": torch.tensor(0.0)}, step=0)
        d_total, _ = loss_fn(images.bfloat16(), blurred(images).bfloat16(), step=0, mode="discriminator")
    assert total.dtype == torch.float32 and d_total.dtype == torch.float32


def test_reconstruction_loss_bad_settings_and_inputs(images):
    with pytest.raises(LossConfigError, match="reconstruction_loss"):
        ReconstructionLoss("l3", perceptual_loss=None)
    loss_fn = ReconstructionLoss(perceptual_loss=None)
    with pytest.raises(LossConfigError, match="differ in shape"):
        loss_fn(images, images[:, :, :16], {"quantizer_loss": torch.tensor(0.0)})
    with pytest.raises(LossConfigError, match="mode"):
        loss_fn(images, images, mode="critic")
    with pytest.raises(LossConfigError, match="posterior"):
        ReconstructionLoss(perceptual_loss=None, quantize_mode="vae")(images, images, {"quantizer_loss": 0})


# --------------------------------------------------------------------------- MaskGIT


def test_masked_token_loss_by_hand():
    torch.manual_seed(3)
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, 4, 0], [2, 2, 3]])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    eps, w_unmasked = 0.1, 0.25
    num, den = 0.0, 0.0
    for b in range(2):
        for k in range(3):
            logp = torch.log_softmax(logits[b, k], dim=0)
            ce = (1 - eps) * -logp[targets[b, k]] - eps * logp.mean()
            w = 1.0 if mask[b, k] else w_unmasked
            num, den = num + w * ce.item(), den + w
    loss, logs = MaskedTokenLoss(label_smoothing=eps, loss_weight_unmasked_token=w_unmasked)(logits, targets, mask)
    assert loss.item() == pytest.approx(num / den, rel=1e-5)
    predicted = logits.argmax(-1)
    acc_rows = [(predicted[b][mask[b]] == targets[b][mask[b]]).float().mean() for b in range(2)]
    assert logs["masked_accuracy"].item() == pytest.approx(torch.stack(acc_rows).mean().item())


def test_masked_token_accuracy_counts_only_masked_positions():
    targets = torch.tensor([[0, 1, 2, 3]])
    logits = F.one_hot(torch.tensor([[0, 0, 2, 0]]), 4).float() * 10  # right at positions 0 and 2
    _, logs = MaskedTokenLoss()(logits, targets, torch.tensor([[True, True, True, False]]))
    assert logs["masked_accuracy"].item() == pytest.approx(2 / 3)


def test_masked_token_loss_rejects_bad_shapes():
    with pytest.raises(LossConfigError, match="logits"):
        MaskedTokenLoss()(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool))


class MeanAbsDifference(torch.nn.Module):
    def forward(self, x, y):
        return (x - y).abs().mean()


def test_perceptual_term_is_weighted_in(images):
    recon = blurred(images)
    loss_fn = ReconstructionLoss(perceptual_loss=MeanAbsDifference(), perceptual_weight=0.1, discriminator_weight=0)
    total, logs = loss_fn(images, recon, {"quantizer_loss": torch.tensor(0.0)})
    expected_perceptual = 0.1 * (images - recon).abs().mean()
    assert logs["perceptual_loss"].item() == pytest.approx(expected_perceptual.item(), rel=1e-6)
    assert total.item() == pytest.approx(((images - recon) ** 2).mean().item() + expected_perceptual.item(), rel=1e-5)
    assert ReconstructionLoss(perceptual_loss=MeanAbsDifference(), perceptual_weight=0).perceptual is None
