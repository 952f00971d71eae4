"""The Pipeline's inference paths (onetok.backends): ONNX Runtime through the Pipeline, and the
measured "auto" choice cached per machine and model, on the shipped models and example photos."""
import copy
import json

import pytest
import torch

from onetok import Pipeline, TiTok, backends
from onetok.config import PRESETS
from onetok.cli.main import main
from onetok.errors import PrecisionError
from onetok.hub import example_photos

pytest.importorskip("onnxruntime")
PHOTOS = example_photos()[:4]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / torch.mean((a - b) ** 2)))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One onetok cache for the module: the shipped models are exported to ONNX once."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ONETOK_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def fp32(cache):
    return Pipeline.from_pretrained(precision="fp32")


def test_onnx_path_runs_every_task_like_fp32(cache, fp32):
    pipe = Pipeline.from_pretrained(precision="onnx")
    assert pipe.paths == {"tokenize": "onnx", "detokenize": "onnx", "generate": "onnx"}
    assert list((cache / "onnx").iterdir())  # exported once into the cache
    ids = fp32.tokenize(PHOTOS)
    assert float((pipe.tokenize(PHOTOS) == ids).float().mean()) >= 0.99
    assert torch.equal(pipe.tokenize(PHOTOS, num_tokens=8), pipe.tokenize(PHOTOS)[:, :8])
    assert psnr(pipe.detokenize(ids), fp32.detokenize(ids)) >= 40
    assert psnr(pipe.detokenize(ids[:, :5]), fp32.detokenize(ids[:, :5])) >= 40  # prefixes too
    # its step runs inside torch's sampling loop: the same seeded draws, the same samples
    assert psnr(pipe.generate([3, 5], seed=7), fp32.generate([3, 5], seed=7)) >= 40


def test_int8_graphs_join_an_fp32_export_without_exporting_it_again(cache):
    Pipeline.from_pretrained(precision="onnx")
    folders = sorted((cache / "onnx").iterdir())
    stamps = {p: p.stat().st_mtime_ns for folder in folders for p in folder.glob("*.onnx")}
    pipe = Pipeline.from_pretrained(precision="onnx-int8")
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    assert all(list(folder.glob("*.int8.onnx")) for folder in folders)
    assert float((pipe.tokenize(PHOTOS) == Pipeline.from_pretrained(precision="onnx").tokenize(PHOTOS)).float().mean()) > 0.8


def test_auto_measures_once_and_caches_per_machine_and_model(cache, monkeypatch):
    monkeypatch.setenv(backends.PROBE_ENV, "1")
    cache_file = cache / backends.CACHE_NAME
    cache_file.unlink(missing_ok=True)
    pipe = Pipeline.from_pretrained(precision="auto")
    entries = json.loads(cache_file.read_text())[backends.machine_key(pipe.device)]
    assert {key.split(":")[0] for key in entries} == {"tokenize", "detokenize", "generate"}
    for key, entry in entries.items():
        task = key.split(":")[0]
        measured = entry["measured"]
        assert {"fp32", "onnx", "onnx-int8"} <= set(measured)
        chosen = measured[entry["chosen"]]
        assert chosen["faithful"] and pipe.paths[task] == entry["chosen"]
        # the fastest of the faithful paths
        assert all(chosen["seconds"] <= m["seconds"] for m in measured.values() if m["faithful"])
        for m in measured.values():
            quality = m["psnr_db"] >= 35 if task == "detokenize" else m["same_ids"] >= 0.97
            assert m["faithful"] == quality
    # a second pipeline on the same machine reads the cache instead of measuring again
    monkeypatch.setattr(backends, "probe", lambda *a: pytest.fail("probed again"))
    assert Pipeline.from_pretrained(precision="auto").paths == pipe.paths


def test_auto_measures_again_after_a_damaged_cache(cache, monkeypatch):
    monkeypatch.setenv(backends.PROBE_ENV, "1")
    (cache / backends.CACHE_NAME).write_text("{not json")
    calls = []
    monkeypatch.setattr(backends, "probe", lambda task, *a: calls.append(task) or {"chosen": "fp32", "measured": {}})
    assert Pipeline.from_pretrained(precision="auto").paths == dict.fromkeys(backends.TASKS, "fp32")
    assert calls == list(backends.TASKS)
    json.loads((cache / backends.CACHE_NAME).read_text())  # rewritten whole


def test_auto_without_the_probe_is_the_documented_rule(monkeypatch):
    monkeypatch.setenv(backends.PROBE_ENV, "0")
    monkeypatch.setattr(backends, "probe", lambda *a: pytest.fail("probed"))
    rule = backends.auto_precision("cpu")
    assert Pipeline.from_pretrained(precision="auto").paths == dict.fromkeys(backends.TASKS, rule)


def tiny_vae() -> TiTok:
    tree = copy.deepcopy(PRESETS["titok_tiny"])
    tree["model"]["vq_model"].update(quantize_mode="vae", token_size=16)
    return TiTok.from_config(tree)


def test_onnx_paths_say_what_they_cannot_do(cache):
    with pytest.raises(PrecisionError, match="runs ONNX Runtime on the CPU; use device 'cpu'"):
        backends.check_path("onnx", torch.device("cuda"))
    with pytest.raises(PrecisionError, match="this model has no ONNX path: only VQ tokenizers"):
        Pipeline(tiny_vae(), device="cpu", precision="onnx")
    assert backends.candidates(tiny_vae(), torch.device("cpu"))[-1] != "onnx-int8"  # auto skips it
    with pytest.raises(PrecisionError, match="through onetok.Pipeline"):
        Pipeline.from_pretrained(precision="fp32").tokenizer.tokenize(torch.rand(1, 3, 128, 128), precision="onnx")


def test_cli_runs_on_the_onnx_path(cache, tmp_path, capsys):
    ids = tmp_path / "ids.npy"
    assert main(["tokenize", *map(str, PHOTOS[:2]), "-o", str(ids), "--precision", "onnx"]) == 0
    out = tmp_path / "back"
    assert main(["detokenize", str(ids), "-o", str(out), "--precision", "onnx"]) == 0
    assert len(list(out.glob("*.png"))) == 2
