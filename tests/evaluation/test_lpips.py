"""LPIPS with random VGG16 weights of the torchvision layout (the ImageNet ones are not offline)."""
import pytest
import torch
from PIL import Image

from onetok.data.images import pil_to_tensor, resize_center_crop
from onetok.evaluation import lpips as lp

# torchvision vgg16().features conv indices and shapes (out, in).
VGG16_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
               14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512),
               26: (512, 512), 28: (512, 512)}


def torchvision_vgg16_state(seed=0):
    """A state dict shaped like vgg16-397923af.pth (features + classifier), random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for idx, (cout, cin) in VGG16_CONVS.items():
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * (2 / (9 * cin)) ** 0.5
        state[f"features.{idx}.bias"] = torch.zeros(cout)
    state["classifier.0.weight"] = torch.zeros(4, 4)  # ignored by LPIPS
    return state


def random_heads(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) for i, c in enumerate(lp.TAP_CHANNELS)}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lpips")
    torch.save(torchvision_vgg16_state(), folder / "vgg16.pth")
    torch.save(random_heads(), folder / "heads.pth")
    return folder


@pytest.fixture(scope="module")
def model(weights_dir):
    return lp.load_lpips(weights_dir / "vgg16.pth", weights_dir / "heads.pth")


@pytest.fixture(scope="module")
def photos(sample_photos):
    return torch.stack([pil_to_tensor(resize_center_crop(Image.fromarray(p), 48)) for p in sample_photos[:3]])


def test_key_layout_matches_torchvision_and_lpips():
    keys = {k: tuple(v.shape) for k, v in lp.LPIPS().state_dict().items()}
    expected = {f"features.{i}.weight": (o, c, 3, 3) for i, (o, c) in VGG16_CONVS.items()}
    expected |= {f"features.{i}.bias": (o,) for i, (o, _) in VGG16_CONVS.items()}
    expected |= {k: tuple(v.shape) for k, v in random_heads().items()}
    assert keys == expected


def test_distance_properties(model, photos):
    with torch.no_grad():
        self_dist = model(photos, photos)
        noisy = (photos + 0.05 * torch.randn_like(photos)).clamp(0, 1)
        noisier = (photos + 0.2 * torch.randn_like(photos)).clamp(0, 1)
        d1, d1_swapped, d2 = model(photos, noisy), model(noisy, photos), model(photos, noisier)
    assert self_dist.shape == (3,) and torch.all(self_dist.abs() < 1e-6)
    torch.testing.assert_close(d1, d1_swapped)
    assert torch.all(d1 > 0) and torch.all(d2 > d1)


def test_hand_computed_single_layer(model, photos):
    # Rebuild the first term by hand: scaling, relu1_2 features, unit norm, weighted squared diff, mean.
    a, b = photos[:1], photos[1:2]
    scale = lambda x: (2 * x - 1 - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor(
        [0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fa, fb = model.features[:4](scale(a)), model.features[:4](scale(b))
    na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    w = model.lin0.model[1].weight.view(1, -1, 1, 1)
    expected = ((na - nb) ** 2 * w).sum(1).mean()
    with torch.no_grad():
        got = model.lin0((lp.unit_normalize(model.tapped_features(scale(a))[0])
                          - lp.unit_normalize(model.tapped_features(scale(b))[0])) ** 2).mean()
    torch.testing.assert_close(got, expected.detach())


def test_heads_from_the_lpips_wheel(weights_dir):
    path = lp.wheel_heads_path()
    if path is None:
        pytest.skip("lpips wheel not installed (pip install --no-deps lpips)")
    model = lp.load_lpips(weights_dir / "vgg16.pth")  # heads resolve to the wheel's file
    shipped = torch.load(path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.lin3.model[1].weight, shipped["lin3.model.1.weight"])
    assert all((h.model[1].weight >= 0).all() for h in model.heads())  # the published heads are non-negative


def test_wrong_layout_is_a_clear_error(tmp_path):
    state = torchvision_vgg16_state()
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(state, tmp_path / "vgg16.pth")
    torch.save(random_heads(), tmp_path / "heads.pth")
    with pytest.raises(lp.LPIPSWeightsError, match="VGG16 features"):
        lp.load_lpips(tmp_path / "vgg16.pth", tmp_path / "heads.pth")
    with pytest.raises(lp.LPIPSWeightsError, match="no such"):
        lp.load_lpips(tmp_path / "absent.pth", tmp_path / "heads.pth")
