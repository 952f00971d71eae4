"""PatchGAN discriminator: layout, shapes, blur downsampling, gradients."""
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from onetok.data.images import pil_to_tensor, resize_center_crop
from onetok.training.discriminator import BlurDownsample, DiscriminatorInputError, NLayerDiscriminator, same_padding


def photos(sample_photos, size, n=2):
    return torch.stack([pil_to_tensor(resize_center_crop(Image.fromarray(p), size)) for p in sample_photos[:n]])


def test_state_dict_layout_matches_reference_names_and_shapes():
    shapes = {k: tuple(v.shape) for k, v in NLayerDiscriminator().state_dict().items()}
    expected = {"block_in.0.weight": (128, 3, 5, 5), "block_in.0.bias": (128,)}
    for i, (cin, cout) in enumerate([(128, 128), (128, 256), (256, 512)]):
        expected[f"blocks.{i}.0.weight"] = (cout, cin, 3, 3)
        expected[f"blocks.{i}.0.bias"] = (cout,)
        expected[f"blocks.{i}.1.kernel"] = (1, 1, 4, 4)
        expected[f"blocks.{i}.2.weight"] = (cout,)
        expected[f"blocks.{i}.2.bias"] = (cout,)
    expected.update({
        "to_logits.0.weight": (512, 512, 1, 1), "to_logits.0.bias": (512,),
        "to_logits.2.weight": (1, 512, 5, 5), "to_logits.2.bias": (1,),
    })
    assert shapes == expected


def test_blur_kernel_is_separable_1331_over_8():
    taps = torch.tensor([1.0, 3, 3, 1]) / 8
    assert torch.allclose(BlurDownsample().kernel[0, 0], torch.outer(taps, taps))


@pytest.mark.parametrize("size", [7, 8, 15, 16])
def test_blur_downsample_halves_with_same_padding_and_keeps_constants(size):
    x = torch.full((1, 2, size, size), 0.7)
    y = BlurDownsample()(x)
    assert y.shape == (1, 2, (size + 1) // 2, (size + 1) // 2)
    assert same_padding(size, 4, 2) == max(((size + 1) // 2 - 1) * 2 + 4 - size, 0)
    # Away from the zero-padded border a constant image stays constant.
    assert torch.allclose(y[..., 1:-1, 1:-1], torch.full_like(y[..., 1:-1, 1:-1], 0.7))


def test_blur_downsample_matches_a_hand_convolution():
    x = torch.randn(1, 3, 10, 10)
    taps = torch.tensor([1.0, 3, 3, 1]) / 8
    kernel = torch.outer(taps, taps).expand(3, 1, 4, 4)
    expected = F.conv2d(F.pad(x, [1, 1, 1, 1]), kernel, stride=2, groups=3)  # SAME pad for k=4, s=2, n=10
    assert torch.allclose(BlurDownsample()(x), expected, atol=1e-6)


@pytest.mark.parametrize("size", [32, 48])
def test_patch_logits_shape_on_real_photos(sample_photos, size):
    logits = NLayerDiscriminator()(photos(sample_photos, size))
    assert logits.shape == (2, 1, 16, 16)
    assert torch.isfinite(logits).all()


def test_gradients_reach_every_parameter_and_the_input(sample_photos):
    disc = NLayerDiscriminator()
    images = photos(sample_photos, 32).requires_grad_(True)
    disc(images).mean().backward()
    for name, p in disc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert images.grad.abs().sum() > 0


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(DiscriminatorInputError, match=r"\(B, 3, H, W\)"):
        NLayerDiscriminator()(torch.rand(2, 64, 64))
