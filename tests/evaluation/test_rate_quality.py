"""`onetok eval recon --num-tokens`: the rate–quality table and plot, through the entry point."""
import json

import pytest
import torch
from PIL import Image

from onetok.cli.main import main
from onetok.evaluation import inception as inc
from onetok.evaluation.codecs import available_codecs
from onetok.models import TiTok


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, sample_photos, one_thread):
    root = tmp_path_factory.mktemp("rate_quality")
    (root / "photos").mkdir()
    for i, photo in enumerate(sample_photos[1:3]):
        Image.fromarray(photo).save(root / "photos" / f"p{i}.jpg", quality=95)
    torch.manual_seed(0)
    TiTok.from_config("titok_tiny").save_pretrained(root / "tiny")  # 32 tokens of 8 bits at 64 px
    state = inc.converted_wheel_state_dict() if inc.wheel_torchscript_path() else inc.FIDInceptionV3(False).state_dict()
    torch.save(state, root / "inception.pth")
    return root


def run(workspace, out, counts: str) -> int:
    return main(["eval", "recon", str(workspace / "photos"), "--model", str(workspace / "tiny"), "-o", str(out),
                 "--num-tokens", counts, "--inception-weights", str(workspace / "inception.pth"), "--lpips", "off",
                 "--kid-subsets", "2", "--kid-subset-size", "2"])


def test_table_and_plot_at_every_budget(workspace, capsys):
    out = workspace / "rq"
    assert run(workspace, out, "1,2,4,...,32") == 0
    printed = capsys.readouterr()
    assert "rate_quality.md" in printed.out and "LPIPS not computed" in printed.err
    result = json.loads((out / "rate_quality.json").read_text())
    rows = result["rows"]
    counts = [1, 2, 4, 8, 16, 32]
    assert result["details"]["token_counts"] == counts and result["details"]["num_images"] == 2

    tokens = {r["num_tokens"]: r for r in rows if r["method"] == "tokens"}
    assert sorted(tokens) == counts
    for k, row in tokens.items():
        assert row["bytes_per_image"] == k * 8 / 8  # codebook 256: 8 bits a token
        assert row["psnr"] > 5 and 0 < row["ssim"] <= 1 and row["rfid"] > 0 and row["lpips"] is None

    codecs = list(available_codecs().usable)
    assert {"JPEG", "WebP"} <= set(codecs)
    for k in counts:
        at_k = {r["method"]: r for r in rows if r["num_tokens"] == k}
        assert set(at_k) == {"tokens", "thumbnail", *codecs}
        side = int(at_k["thumbnail"]["setting"].split("x")[0])
        assert at_k["thumbnail"]["bytes_per_image"] == 3 * side * side
    standalone = {r["method"]: r for r in rows if r["num_tokens"] is None}
    assert set(standalone) == {*codecs, "ThumbHash"}
    assert 15 <= standalone["ThumbHash"]["bytes_per_image"] <= 40
    for name in codecs:
        # no codec writes a 64 px photo in 32 bytes: the matched row is the smallest file, and says so
        matched = next(r for r in rows if r["method"] == name and r["num_tokens"] == 32)
        assert matched["bytes_per_image"] == standalone[name]["bytes_per_image"] > 32
        assert "cannot go as low as 32 bytes" in matched["note"]
        assert matched["psnr"] == standalone[name]["psnr"]
    one_token = next(r for r in rows if r["method"] == "thumbnail" and r["num_tokens"] == 1)
    assert "more than 1" in one_token["note"]  # a 1x1 thumbnail is 3 bytes

    table = (out / "rate_quality.md").read_text()
    for k in counts:
        assert f"| {k} | tokens | first {k} of 32 | {k:.1f} |" in table
    assert table.count("| ThumbHash |") == 1 and "![rate-quality](rate_quality.png)" in table
    with Image.open(out / "rate_quality.png") as plot:
        assert plot.format == "PNG" and plot.width > 600 and plot.height > 600


def test_bad_counts_are_one_line(workspace, tmp_path, capsys):
    assert run(workspace, tmp_path / "rq", "0,8") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onetok: error:") and "1..32" in err[0]
    assert run(workspace, tmp_path / "rq", "4,x") == 2
    assert "expected counts like 1,2,4,...,32" in capsys.readouterr().err
    assert not (tmp_path / "rq").exists()


def test_budget_strip_decodes_every_prefix(workspace):
    from onetok.data.images import load_image
    from onetok.evaluation.image_metrics import psnr
    from onetok.evaluation.rate_quality import budget_strip, strip_picture

    model = TiTok.from_pretrained(workspace / "tiny").eval()
    photo = load_image(next((workspace / "photos").iterdir()), 64)
    entries = budget_strip(model, photo)
    assert [e["num_tokens"] for e in entries] == [1, 2, 4, 8, 16, 32]
    assert [e["bytes"] for e in entries] == [1, 2, 4, 8, 16, 32]
    ids = model.tokenize(photo[None])
    for entry in entries:  # each picture is the decoding of the first k ids, its PSNR measured on it
        expected = model.detokenize(ids[:, : entry["num_tokens"]])[0]
        assert torch.allclose(entry["image"], expected, atol=1 / 255 + 1e-6)
        assert entry["psnr"] == pytest.approx(float(psnr(photo[None], entry["image"][None])[0]), abs=1e-6)
    picture = strip_picture(photo, entries, scale=2)
    assert picture.width == 2 * (7 * 66 + 2) and picture.height > 2 * 68
