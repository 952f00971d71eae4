"""`onetok export --format onnx` and the onetok.onnx runner against the torch models."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from onetok import MaskGIT, TiTok, preset
from onetok.cli.main import main
from onetok.data.images import load_image
from onetok.export import export_onnx
from onetok.hub import default_generator_path, default_tokenizer_path
from onetok.onnx import OnnxGenerator, OnnxModelError, OnnxTokenizer

from .models.golden import build, load_fixture

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "src" / "onetok" / "assets" / "examples").glob("*.jpg"))


def psnr(a, b) -> float:
    mse = float(((torch.as_tensor(a).float() - torch.as_tensor(b).float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def agreement(a, b) -> float:
    return float((torch.as_tensor(a) == torch.as_tensor(b)).float().mean())


def photos(size: int) -> torch.Tensor:
    return torch.stack([load_image(p, size) for p in EXAMPLES])


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped tokenizer and generator, exported (with int8 twins) through the CLI entry point."""
    out = tmp_path_factory.mktemp("onnx")
    assert main(["export", "--generator", "--int8", "-o", str(out)]) == 0
    tokenizer = TiTok.from_pretrained(default_tokenizer_path())
    generator = MaskGIT.from_pretrained(default_generator_path())
    return out, tokenizer, generator


def test_export_writes_the_graphs_and_their_description(shipped):
    out, tokenizer, generator = shipped
    meta = json.loads((out / "onetok_onnx.json").read_text())
    assert meta["tokenizer"]["num_tokens"] == tokenizer.config.num_latent_tokens
    assert meta["generator"]["num_classes"] == generator.config.condition_num_classes
    for part in ("tokenizer", "generator"):
        for files in meta[part]["files"].values():
            assert all((out / name).stat().st_size > 0 for name in files.values())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_float32_onnx_tokenizer_matches_torch_on_the_shipped_model(shipped):
    out, tokenizer, _ = shipped
    images = photos(tokenizer.config.crop_size)
    onnx = OnnxTokenizer(out)
    ids = tokenizer.tokenize(images)
    assert agreement(onnx.tokenize(images.numpy()), ids) >= 0.99
    # batch of a size never seen at export: the batch dimension is dynamic
    assert psnr(onnx.detokenize(ids[:3].numpy()), tokenizer.detokenize(ids[:3])) >= 40


def test_variable_length_decoder_exports_every_prefix_length(tmp_path):
    tree = preset("titok_tiny")
    tree["model"]["vq_model"].update(variable_length=True, decoder_head="conv", decoder_head_channels=8)
    torch.manual_seed(0)
    model = TiTok.from_config(tree).eval()
    with torch.no_grad():
        model.decoder.null_token.normal_()  # a trained null token, not the zero one
    export_onnx(tmp_path, tokenizer=model)
    onnx = OnnxTokenizer(tmp_path)
    images = photos(model.config.crop_size)
    ids = model.tokenize(images)
    assert agreement(onnx.tokenize(images.numpy(), num_tokens=5), ids[:, :5]) >= 0.99
    for k in (1, 5, model.config.num_latent_tokens):
        assert psnr(onnx.detokenize(ids[:, :k].numpy()), model.detokenize(ids[:, :k])) >= 40
    with pytest.raises(OnnxModelError, match="1 <= k <= 32"):
        onnx.detokenize(np.zeros((1, 33), dtype=np.int64))


def test_int8_onnx_tokenizer_stays_close_on_the_shipped_model(shipped):
    """Measured 93.8% identical ids (16 of 256) and 50 dB: below the 97% target, see the README speed section."""
    out, tokenizer, _ = shipped
    images = photos(tokenizer.config.crop_size)
    onnx = OnnxTokenizer(out, int8=True)
    ids = tokenizer.tokenize(images)
    assert agreement(onnx.tokenize(images.numpy()), ids) >= 0.9
    assert psnr(onnx.detokenize(ids.numpy()), tokenizer.detokenize(ids)) >= 35


def test_generator_step_gives_torch_guided_logits(shipped):
    out, _, generator = shipped
    onnx = OnnxGenerator(out)
    torch.manual_seed(0)
    ids = torch.randint(0, generator.config.codebook_size + 1, (3, generator.config.image_seq_len))
    classes = torch.tensor([0, 4, 21])
    expected = generator.guided_logits(ids, classes, 2.0, "linear", batched=True)
    got = onnx.guided_logits(ids.numpy(), classes.numpy(), 2.0)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("int8, least", [(False, 0.99), (True, 0.97)])
def test_onnx_generation_matches_torch_without_noise(shipped, int8, least):
    """At temperature 0 the sampler is deterministic, so the numpy loop must pick torch's ids."""
    out, _, generator = shipped
    classes = torch.tensor([0, 3, 5, 21])
    expected = generator.generate(classes, guidance_scale=2.0, guidance_decay="linear", randomize_temperature=0.0,
                                  num_sample_steps=8)
    got = OnnxGenerator(out, int8=int8).generate(classes.numpy(), randomize_temperature=0.0)
    assert got.shape == tuple(expected.shape)
    assert agreement(got, expected) >= least


def test_onnx_generation_is_seeded(shipped):
    out, _, generator = shipped
    onnx = OnnxGenerator(out)
    a, b = onnx.generate(np.array([1, 2]), seed=3), onnx.generate(np.array([1, 2]), seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() < generator.config.codebook_size
    assert not np.array_equal(a, onnx.generate(np.array([1, 2]), seed=4))


@pytest.mark.parametrize("name", ["titok_vq_twostage", "titok_vq_pixel"])
def test_parity_fixture_tokenizers_export(golden_dir, tmp_path, name):
    meta, weights, _ = load_fixture(golden_dir, name)
    model = build(meta, weights, "titok")
    export_onnx(tmp_path, tokenizer=model)
    images = photos(model.config.crop_size)
    onnx = OnnxTokenizer(tmp_path)
    ids = model.tokenize(images)
    assert agreement(onnx.tokenize(images.numpy()), ids) >= 0.99
    assert psnr(onnx.detokenize(ids.numpy()), model.detokenize(ids)) >= 40


@pytest.mark.parametrize("name", ["imagebert", "uvitbert"])
def test_parity_fixture_generators_export(golden_dir, tmp_path, name):
    meta, weights, _ = load_fixture(golden_dir, name)
    model = build(meta, weights, "maskgit")
    export_onnx(tmp_path, generator=model)
    s = meta["sample_settings"]
    classes = torch.arange(4) % model.config.condition_num_classes
    settings = dict(guidance_scale=s["guidance_scale"], guidance_decay=s["guidance_decay"],
                    randomize_temperature=0.0, num_sample_steps=s["num_sample_steps"])
    expected = model.generate(classes, **settings)
    assert agreement(OnnxGenerator(tmp_path).generate(classes.numpy(), **settings), expected) >= 0.99


FRESH_PROCESS = r"""
import importlib.util, json, sys
sys.modules["torch"] = None  # any attempt to import torch now fails
import numpy as np
spec = importlib.util.spec_from_file_location("onetok_onnx_runner", sys.argv[1])
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)
folder, images = sys.argv[2], np.load(sys.argv[3])
tokenizer = runner.OnnxTokenizer(folder, int8=True)
ids = tokenizer.tokenize(images)
np.save(sys.argv[4], ids)
np.save(sys.argv[5], tokenizer.detokenize(ids))
np.save(sys.argv[6], runner.OnnxGenerator(folder).generate(np.array([2, 7]), seed=5))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onetok")))
"""


def test_exported_files_run_in_a_fresh_process_without_torch(shipped, tmp_path):
    out, tokenizer, _ = shipped
    images = photos(tokenizer.config.crop_size).numpy()
    np.save(tmp_path / "images.npy", images)
    runner = Path(sys.modules["onetok.onnx"].__file__)
    files = [tmp_path / f"{n}.npy" for n in ("ids", "pixels", "sampled")]
    done = subprocess.run([sys.executable, "-I", "-c", FRESH_PROCESS, str(runner), str(out),
                           str(tmp_path / "images.npy"), *map(str, files)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['torch']"  # only the blocking entry: nothing imported torch or onetok
    int8 = OnnxTokenizer(out, int8=True)
    np.testing.assert_array_equal(np.load(files[0]), int8.tokenize(images))
    np.testing.assert_allclose(np.load(files[1]), int8.detokenize(np.load(files[0])), atol=1e-6)
    np.testing.assert_array_equal(np.load(files[2]), OnnxGenerator(out).generate(np.array([2, 7]), seed=5))


def test_bad_inputs_are_clear_errors(shipped):
    out, tokenizer, _ = shipped
    onnx = OnnxTokenizer(out)
    with pytest.raises(OnnxModelError, match=r"\(B, 3, 128, 128\)"):
        onnx.tokenize(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(OnnxModelError, match="must lie in"):
        onnx.detokenize(np.full((1, tokenizer.config.num_latent_tokens), 10**6))
    with pytest.raises(OnnxModelError, match="class ids"):
        OnnxGenerator(out).generate(np.array([99]))
    with pytest.raises(OnnxModelError, match="no onetok_onnx.json"):
        OnnxTokenizer(out / "missing")


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "--no-tokenizer", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["onetok: error: nothing to export: give a tokenizer, a generator or both"]
    assert main(["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "y")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_onnx_step_inside_torchs_loop_samples_torchs_ids(shipped):
    """With the exported step in torch's sampling loop the random draws are torch's: same ids at a temperature above 0."""
    from onetok.export import with_onnx_step

    out, _, generator = shipped
    classes = torch.tensor([0, 3, 5, 21])
    torch.manual_seed(11)
    expected = generator.generate(classes)
    torch.manual_seed(11)
    got = with_onnx_step(generator, OnnxGenerator(out)).generate(classes)
    assert agreement(got, expected) >= 0.99


def test_graphs_over_the_protobuf_limit_keep_their_weights_in_one_data_file(shipped, tmp_path):
    """What torch writes for a graph over 2 GiB (TiTok-L-32): one file per weight beside the graph.
    The export gathers them into encoder.onnx.data, which ONNX Runtime and the int8 quantizer read."""
    import onnx

    from onetok.export import _one_data_file, quantize_int8

    out = shipped[0]
    stage = tmp_path / "stage"
    stage.mkdir()
    onnx.save_model(onnx.load(str(out / "encoder.onnx")), str(stage / "encoder.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)
    assert len(list(stage.iterdir())) > 10
    _one_data_file(stage / "encoder.onnx")
    assert sorted(p.name for p in stage.iterdir()) == ["encoder.onnx", "encoder.onnx.data"]
    assert (stage / "encoder.onnx").stat().st_size < (stage / "encoder.onnx.data").stat().st_size
    import onnxruntime as ort

    images = {"images": photos(shipped[1].config.crop_size).numpy()}

    def ids(path):
        return ort.InferenceSession(str(path)).run(None, images)[0]

    assert np.array_equal(ids(stage / "encoder.onnx"), ids(out / "encoder.onnx"))
    quantize_int8(stage / "encoder.onnx", stage / "encoder.int8.onnx")
    assert agreement(ids(stage / "encoder.int8.onnx"), ids(out / "encoder.onnx")) > 0.8
    assert not [p for p in stage.iterdir() if p.name.startswith(".")]
