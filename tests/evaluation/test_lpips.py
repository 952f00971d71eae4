"""LPIPS on VGG16 and AlexNet trunks: the published-file check, and the arithmetic on stand-in
weights of the torchvision layout (the ImageNet files are not offline; the stand-ins pass the
check only by injecting their own SHA-256 in place of the published one)."""
import dataclasses

import pytest
import torch
from PIL import Image

from onetok.data.images import pil_to_tensor, resize_center_crop
from onetok.evaluation import lpips as lp

# torchvision vgg16().features conv indices and shapes (out, in).
VGG16_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
               14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512),
               26: (512, 512), 28: (512, 512)}


# torchvision alexnet().features conv indices and shapes (out, in, kernel).
ALEXNET_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}


def torchvision_state(net="vgg", seed=0):
    """A state dict shaped like vgg16-397923af.pth / alexnet-owt-7be5be79.pth (features + classifier), random."""
    convs = {i: (o, c, 3) for i, (o, c) in VGG16_CONVS.items()} if net == "vgg" else ALEXNET_CONVS
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for idx, (cout, cin, k) in convs.items():
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, k, k, generator=gen) * (2 / (k * k * cin)) ** 0.5
        state[f"features.{idx}.bias"] = torch.zeros(cout)
    state["classifier.0.weight"] = torch.zeros(4, 4)  # ignored by LPIPS
    return state


def random_heads(net="vgg", seed=1):
    gen = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) for i, c in enumerate(lp.NETS[net].channels)}


def accept_as_published(monkeypatch, net, backbone=None, heads=None):
    """Make the check expect these stand-in files' digests (the real ones stay in the code)."""
    spec = lp.NETS[net]
    changes = {"backbone_sha256": lp.sha256_of(backbone)} if backbone else {}
    if heads:
        changes["heads_sha256"] = lp.sha256_of(heads)
    monkeypatch.setitem(lp.NETS, net, dataclasses.replace(spec, **changes))


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lpips")
    for net in lp.NETS:
        torch.save(torchvision_state(net), folder / f"{net}_trunk.pth")
        torch.save(random_heads(net), folder / f"{net}_heads.pth")
    return folder


@pytest.fixture(scope="module")
def model(weights_dir):
    with pytest.MonkeyPatch.context() as mp:
        accept_as_published(mp, "vgg", weights_dir / "vgg_trunk.pth", weights_dir / "vgg_heads.pth")
        return lp.load_lpips(weights_dir / "vgg_trunk.pth", weights_dir / "vgg_heads.pth")


@pytest.fixture(scope="module")
def photos(sample_photos):
    return torch.stack([pil_to_tensor(resize_center_crop(Image.fromarray(p), 48)) for p in sample_photos[:3]])


def test_random_weight_trunk_is_refused(weights_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ONETOK_CACHE", str(tmp_path / "cache"))
    for net, name in (("vgg", "vgg16-397923af.pth"), ("alex", "alexnet-owt-7be5be79.pth")):
        accept_as_published(monkeypatch, net, heads=weights_dir / f"{net}_heads.pth")  # only the trunk is wrong
        with pytest.raises(lp.LPIPSWeightsError) as err:
            lp.load_lpips(weights_dir / f"{net}_trunk.pth", weights_dir / f"{net}_heads.pth", net=net)
        message = str(err.value)
        assert "\n" not in message and "not the published" in message
        # names the expected file, its source and where to put it
        assert name in message and f"download.pytorch.org/models/{name}" in message
        assert str(tmp_path / "cache" / name) in message


def test_random_heads_are_refused(weights_dir, monkeypatch):
    accept_as_published(monkeypatch, "vgg", backbone=weights_dir / "vgg_trunk.pth")
    with pytest.raises(lp.LPIPSWeightsError, match="not the published lpips v0.1 vgg.pth heads"):
        lp.load_lpips(weights_dir / "vgg_trunk.pth", weights_dir / "vgg_heads.pth")


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_published_format_file_with_the_right_hash_loads(weights_dir, monkeypatch, net):
    accept_as_published(monkeypatch, net, weights_dir / f"{net}_trunk.pth", weights_dir / f"{net}_heads.pth")
    model = lp.load_lpips(weights_dir / f"{net}_trunk.pth", weights_dir / f"{net}_heads.pth", net=net)
    assert model.net_name == net
    torch.testing.assert_close(model.features[0].weight, torchvision_state(net)["features.0.weight"])


def test_the_real_digests_are_in_the_code():
    # torchvision names its files by the first 8 hex digits of their SHA-256
    for spec in lp.NETS.values():
        assert spec.backbone_file.split("-")[-1].removesuffix(".pth") == spec.backbone_sha256[:8]
        assert len(spec.backbone_sha256) == 64 and len(spec.heads_sha256) == 64


def test_the_wheel_heads_are_the_published_ones():
    for net in lp.NETS:
        path = lp.wheel_heads_path(net)
        if path is None:
            pytest.skip("lpips wheel not installed (pip install --no-deps lpips)")
        assert lp.sha256_of(path) == lp.NETS[net].heads_sha256


def test_key_layout_matches_torchvision_and_lpips():
    keys = {k: tuple(v.shape) for k, v in lp.LPIPS().state_dict().items()}
    expected = {f"features.{i}.weight": (o, c, 3, 3) for i, (o, c) in VGG16_CONVS.items()}
    expected |= {f"features.{i}.bias": (o,) for i, (o, _) in VGG16_CONVS.items()}
    expected |= {k: tuple(v.shape) for k, v in random_heads().items()}
    assert keys == expected
    alex = {k: tuple(v.shape) for k, v in lp.LPIPS("alex").state_dict().items()}
    expected = {f"features.{i}.weight": (o, c, k, k) for i, (o, c, k) in ALEXNET_CONVS.items()}
    expected |= {f"features.{i}.bias": (o,) for i, (o, _, _) in ALEXNET_CONVS.items()}
    expected |= {k: tuple(v.shape) for k, v in random_heads("alex").items()}
    assert alex == expected


def test_alexnet_taps_are_its_five_relus(photos):
    model = lp.LPIPS("alex").eval()
    with torch.no_grad():
        taps = model.tapped_features(photos[:1] * 2 - 1)
    assert [t.shape[1] for t in taps] == [64, 192, 384, 256, 256]
    assert all((t >= 0).all() for t in taps)
    assert [type(model.features[i]).__name__ for i in lp.NETS["alex"].taps] == ["ReLU"] * 5


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


def test_heads_from_the_lpips_wheel(weights_dir, monkeypatch):
    path = lp.wheel_heads_path()
    if path is None:
        pytest.skip("lpips wheel not installed (pip install --no-deps lpips)")
    monkeypatch.setenv("ONETOK_CACHE", str(weights_dir / "empty_cache"))
    accept_as_published(monkeypatch, "vgg", backbone=weights_dir / "vgg_trunk.pth")
    model = lp.load_lpips(weights_dir / "vgg_trunk.pth")  # heads resolve to the wheel's file
    shipped = torch.load(path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.lin3.model[1].weight, shipped["lin3.model.1.weight"])
    assert all((h.model[1].weight >= 0).all() for h in model.heads())  # the published heads are non-negative


def test_wrong_layout_is_a_clear_error(tmp_path, monkeypatch):
    state = torchvision_state()
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(state, tmp_path / "vgg16.pth")
    torch.save(random_heads(), tmp_path / "heads.pth")
    accept_as_published(monkeypatch, "vgg", tmp_path / "vgg16.pth", tmp_path / "heads.pth")
    with pytest.raises(lp.LPIPSWeightsError, match="vgg features"):
        lp.load_lpips(tmp_path / "vgg16.pth", tmp_path / "heads.pth")
    with pytest.raises(lp.LPIPSWeightsError, match="no such"):
        lp.load_lpips(tmp_path / "absent.pth", tmp_path / "heads.pth")
    with pytest.raises(lp.LPIPSWeightsError, match="unknown LPIPS network 'squeeze'"):
        lp.load_lpips(net="squeeze")
