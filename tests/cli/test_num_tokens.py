"""--num-tokens on tokenize / detokenize / reconstruct (through the entry point) and on Pipeline."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from onetok.cli.main import main
from onetok.models import TiTok
from onetok.pipeline import Pipeline

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "onetok" / "assets" / "examples"
PHOTOS = [str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "coffee.jpg")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("num_tokens") / "tiny"
    torch.manual_seed(0)
    TiTok.from_config("titok_tiny").save_pretrained(folder)  # 32 tokens of 8 bits at 64 px
    return str(folder)


def common(tiny):
    return ["--model", tiny, "--device", "cpu", "--precision", "fp32"]


def test_pipeline_prefix_is_the_first_k(tiny):
    pipe = Pipeline.from_pretrained(tiny, device="cpu", precision="fp32")
    full = pipe.tokenize(PHOTOS)
    assert torch.equal(pipe.tokenize(PHOTOS, num_tokens=5), full[:, :5])
    assert torch.equal(pipe.reconstruct(PHOTOS, num_tokens=5), pipe.detokenize(full[:, :5]))
    assert not torch.equal(pipe.reconstruct(PHOTOS, num_tokens=5), pipe.reconstruct(PHOTOS))


def test_token_files_record_their_length(tiny, tmp_path, capsys):
    assert main(["tokenize", *PHOTOS, "-o", str(tmp_path / "all.json"), *common(tiny)]) == 0
    assert main(["tokenize", *PHOTOS, "--num-tokens", "4", "-o", str(tmp_path / "four.json"), *common(tiny)]) == 0
    assert main(["tokenize", *PHOTOS, "--num-tokens", "4", "-o", str(tmp_path / "four.npy"), *common(tiny)]) == 0
    assert "wrote 2 x 4 tokens" in capsys.readouterr().out
    full, four = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("all", "four"))
    assert four["num_tokens"] == 4 and four["max_tokens"] == 32 and full["num_tokens"] == 32
    for path, row in four["tokens"].items():
        assert row == full["tokens"][path][:4]
    assert np.load(tmp_path / "four.npy").tolist() == list(four["tokens"].values())

    # a 4-token file decodes as it is; a full file decodes from its first 4 when asked: the same pixels
    assert main(["detokenize", str(tmp_path / "four.json"), "-o", str(tmp_path / "from_four"), *common(tiny)]) == 0
    assert main(["detokenize", str(tmp_path / "all.json"), "--num-tokens", "4", "-o", str(tmp_path / "cut"),
                 *common(tiny)]) == 0
    for name in ("chelsea", "coffee"):
        a, b = (np.asarray(Image.open(tmp_path / d / f"{name}.png")) for d in ("from_four", "cut"))
        assert a.shape == (64, 64, 3) and np.array_equal(a, b)

    # asking a 4-token file for more than it holds is a one-line error
    capsys.readouterr()
    assert main(["detokenize", str(tmp_path / "four.json"), "--num-tokens", "8", "-o", str(tmp_path / "x"),
                 *common(tiny)]) == 2
    assert "--num-tokens must lie in 1..4" in capsys.readouterr().err


def test_reconstruct_from_a_prefix(tiny, tmp_path, capsys):
    assert main(["reconstruct", *PHOTOS, "--num-tokens", "3", "-o", str(tmp_path / "r.png"), *common(tiny)]) == 0
    out = capsys.readouterr().out
    assert "3 of 32 tokens per image (3 bytes)" in out and out.count("PSNR") == 2
    assert Image.open(tmp_path / "r.png").size == (2 * 64 + 6, 2 * 64 + 6)


@pytest.mark.parametrize("command", ["tokenize", "reconstruct"])
@pytest.mark.parametrize("value", ["0", "33"])
def test_out_of_range_is_one_line(tiny, tmp_path, capsys, command, value):
    out = tmp_path / ("t.json" if command == "tokenize" else "r.png")
    assert main([command, *PHOTOS, "--num-tokens", value, "-o", str(out), *common(tiny)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"onetok: error: --num-tokens must lie in 1..32 (this tokenizer has 32 tokens), got {value}"
    assert not out.exists()
