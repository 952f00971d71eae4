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
