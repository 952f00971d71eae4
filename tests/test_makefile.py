"""`make default-model-quick`: the commands the Makefile runs, run through the CLI entry point."""
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from onetok import Pipeline
from onetok.cli.main import main

REPO = Path(__file__).resolve().parents[1]
PHOTOS = Path("~/.cache/onetok/datasets/debian-photos").expanduser()


def make_commands(target: str, *variables: str) -> list[str]:
    """The shell commands `make TARGET` would run (make -n, sub-makes included), one per entry."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -o: treat the venv stamp as up to date (the environment running the tests is installed)
    dry = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", target, *variables], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in dry.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.mark.slow  # minutes: two tiny trainings and two cards with FID Inception
def test_default_model_quick_runs_end_to_end(tmp_path, monkeypatch):
    for name in ("val", "val-128.npy", "train-128.npy"):
        if not (PHOTOS / name).exists():
            pytest.skip(f"the photo pool is not fetched ({PHOTOS / name}): onetok datasets fetch debian-photos")
    out = tmp_path / "quick"
    commands = make_commands("default-model-quick", f"QUICK_OUT={out}")
    onetok = [c for c in commands if c.startswith(".venv/bin/onetok ")]
    steps = [shlex.split(c)[1:3] for c in onetok]
    assert steps == [["datasets", "fetch"], *[["train", "tokenizer"]] * 6, ["card", "tokenizer"],
                     ["pretokenize", "--tokenizer"], ["train", "generator"], ["card", "generator"]]
    # nothing of the quick run goes into the package
    assert all(str(REPO / "src") not in c and "src/onetok/assets" not in c.split("configs/")[0] for c in onetok)

    monkeypatch.chdir(REPO)  # the commands name configs/ relative to the checkout
    for command in commands:
        words = shlex.split(command)
        if words[:2] == ["rm", "-rf"]:
            for path in words[2:]:
                shutil.rmtree(path, ignore_errors=True)
        elif words[0] == ".venv/bin/onetok" and words[1:3] != ["datasets", "fetch"]:  # the pool is checked above
            assert main(words[1:] + (["--workers", "0"] if words[1] == "pretokenize" else [])) == 0, command

    assets = out / "assets"
    for kind, picture in (("tokenizer", "heldout_reconstructions.png"), ("generator", "samples.png")):
        folder = assets / f"default_{kind}"
        assert {"README.md", "metrics.json", "model.safetensors", "config.json", picture} <= {p.name for p in folder.iterdir()}
    pipe = Pipeline.from_pretrained(assets / "default_tokenizer", assets / "default_generator", precision="fp32")
    assert pipe.num_classes == 22 and pipe.codebook_size == 256
    assert pipe.tokenizer.config.variable_length  # steps 2 to 6 of the recipe ran on step 1's model
    recipe = json.loads((assets / "default_tokenizer" / "metrics.json").read_text())["training"]["recipe"]
    assert [step["name"] for step in recipe] == ["default_tokenizer_fixed", "default_tokenizer_prefix", "default_tokenizer",
                                                "default_tokenizer_decoder", "default_tokenizer_decoder2",
                                                "default_tokenizer_decoder3"]
    assert all(step["steps"] == "4" for step in recipe)
    images = pipe.generate([0, 21], seed=1)
    assert images.shape == (2, 3, 128, 128) and torch.isfinite(images).all()
