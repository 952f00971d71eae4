"""`onetok demo` on the shipped models and example photos, through the entry point."""
import json

import numpy as np
import torch
from PIL import Image

from onetok import Pipeline
from onetok.cli.main import main
from onetok.hub import ASSETS, example_photos


def test_demo_writes_where_it_is_told(tmp_path, capsys):
    before = sorted(p.relative_to(ASSETS) for p in ASSETS.rglob("*"))
    photos = example_photos()[:2]
    assert main(["demo", "--images", *map(str, photos), "-o", str(tmp_path / "demo")]) == 0
    out = tmp_path / "demo"
    assert sorted(p.name for p in out.iterdir()) == ["budget_strip.png", "generated.png", "rate_quality.json",
                                                     "rate_quality.md", "rate_quality.png", "reconstruction.png",
                                                     "report.md", "tokens.json"]
    assert sorted(p.relative_to(ASSETS) for p in ASSETS.rglob("*")) == before  # nothing into the package
    pipe = Pipeline.from_pretrained()
    tokens = json.loads((out / "tokens.json").read_text())
    assert tokens == {p.stem: row for p, row in zip(photos, pipe.tokenize(photos).tolist())}
    report = (out / "report.md").read_text()
    assert "64 (codebook 4096) = 96 bytes" in report and "| **mean** |" in report
    # originals, reconstructions, thumbnails: 3 rows of 2
    assert Image.open(out / "reconstruction.png").size == (2 * 130 + 2, 3 * 130 + 2)
    # the samples are the Pipeline's (classes 0..7, 4 each, seed 0): the first cell is class 0's sample 0
    grid = np.asarray(Image.open(out / "generated.png").convert("RGB"))
    first = (pipe.generate([0], seed=0)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.abs(grid[2:130, 2:130].astype(int) - first).max() <= 1
    assert f"wrote {out / 'reconstruction.png'}" in capsys.readouterr().out


def test_demo_refuses_a_file_as_its_folder(tmp_path, capsys):
    target = tmp_path / "report.txt"
    target.write_text("keep")
    assert main(["demo", "-o", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "keep"
