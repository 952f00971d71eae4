"""pretokenize -> train -> sample on real photos with tiny random models, through the CLI."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from onetok import TiTok
from onetok.cli.main import main
from onetok.data.tokens import TokenDataset, read_token_manifest
from onetok.training.config import config_from_dict
from onetok.training.generator_task import build_run
from onetok.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
GENERATOR = {"model_type": "ViT", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 128, "dropout": 0.1, "attn_drop": 0.1, "num_steps": 4, "class_label_dropout": 0.1,
             "randomize_temperature": 1.0, "guidance_scale": 2.0, "guidance_decay": "linear"}




def save_tokenizer(folder, **vq_changes):
    torch.manual_seed(0)
    tree = TiTok.from_config("titok_tiny").config.to_dict()
    tree["model"]["vq_model"].update(vq_changes)
    return TiTok.from_config(tree).save_pretrained(folder)


@pytest.fixture(scope="module")
def run(tmp_path_factory, sample_photos):
    """Photos in two class folders -> tokens (with flips) -> a generator trained for 3 steps."""
    root = tmp_path_factory.mktemp("roundtrip")
    for i, photo in enumerate(sample_photos):
        folder = root / "photos" / ("cats" if i % 2 else "things")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).resize((96, 80)).save(folder / f"{i}.png")
    tokenizer = save_tokenizer(root / "tokenizer")
    tokens = root / "tokens"
    assert main(["pretokenize", "--tokenizer", str(tokenizer), str(root / "photos"), "-o", str(tokens),
                 "--flip", "--shard-size", "4", "--batch-size", "3", "--workers", "0"]) == 0

    config = config_from_dict({
        "experiment": {"output_dir": str(root / "run"), "max_train_steps": 3, "save_every": 3, "preview_every": 3,
                       "log_every": 1, "log_with": "none"},
        "optimizer": {"lr": 1e-3},
        "training": {"batch_size": 4},
        "model": {"generator": dict(GENERATOR)},
        "dataset": {"tokens": str(tokens), "tokenizer": str(tokenizer)},
    })
    assert Trainer(config, *build_run(config)).train()
    return root


def test_pretokenize_writes_labelled_shards_and_resumes(run, sample_photos):
    tokens = run / "tokens"
    manifest = read_token_manifest(tokens)
    n = len(sample_photos)
    assert manifest["count"] == 2 * n and manifest["class_names"] == ["cats", "things"]
    assert [s["index"] for s in manifest["shards"]] == list(range((n + 3) // 4))
    dataset = TokenDataset(tokens)
    ids, labels = zip(*(dataset[i] for i in range(len(dataset))))
    # shard 0 = cats/1, cats/3, cats/5, things/0 in batches of 3: each batch's originals, then their flips
    assert list(labels[:8]) == [0, 0, 0, 0, 0, 0, 1, 1] and not torch.equal(ids[0], ids[3])

    first = tokens / "tokens-00000.npy"
    stamp = first.stat().st_mtime_ns
    (tokens / "tokens-00001.npy").unlink()
    (tokens / "manifest.json").unlink()
    assert main(["pretokenize", "--tokenizer", str(run / "tokenizer"), str(run / "photos"), "-o", str(tokens),
                 "--flip", "--shard-size", "4", "--batch-size", "3", "--workers", "0"]) == 0
    assert first.stat().st_mtime_ns == stamp  # finished shards are skipped
    again = TokenDataset(tokens)
    assert all(torch.equal(again[i][0], ids[i]) for i in range(len(again)))


def test_pretokenize_drops_unreadable_images(run, tmp_path, sample_photos):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, photo in enumerate(sample_photos[:2]):
        Image.fromarray(photo).resize((64, 64)).save(photos / f"{i}.png")
    (photos / "2.png").write_bytes(b"not an image")
    assert main(["pretokenize", "--tokenizer", str(run / "tokenizer"), str(photos), "-o", str(tmp_path / "tokens"),
                 "--workers", "0"]) == 0
    assert read_token_manifest(tmp_path / "tokens")["count"] == 2


def test_sample_writes_pngs_grid_and_adm_npz_independent_of_batch(run, tmp_path):
    common = ["sample", "--tokenizer", str(run / "tokenizer"), "--generator", str(run / "run" / "final"),
              "--per-class", "3", "--precision", "fp32", "--seed", "4"]
    assert main(common + ["--classes", "all", "--batch", "4", "-o", str(tmp_path / "a")]) == 0
    samples = np.load(tmp_path / "a" / "samples_6x64x64x3.npz")
    assert samples["arr_0"].dtype == np.uint8 and samples["arr_0"].shape == (6, 64, 64, 3)
    assert samples["arr_1"].tolist() == [0, 0, 0, 1, 1, 1]
    assert len(list((tmp_path / "a" / "images").glob("*_class1.png"))) == 3
    assert Image.open(tmp_path / "a" / "grid.png").size == (3 * 66 + 2, 2 * 66 + 2)
    assert not (tmp_path / "a" / ".parts").exists()

    assert main(common + ["--classes", "cats,1", "--batch", "1", "--no-images", "-o", str(tmp_path / "b")]) == 0
    again = np.load(tmp_path / "b" / "samples_6x64x64x3.npz")["arr_0"]
    assert np.array_equal(again, samples["arr_0"]) and not (tmp_path / "b" / "images").exists()


def test_mismatched_tokenizers_and_bad_arguments_are_refused(run, tmp_path, capsys):
    other = save_tokenizer(tmp_path / "other", commitment_cost=0.5)
    assert main(["sample", "--tokenizer", str(other), "--generator", str(run / "run" / "final"),
                 "--per-class", "1", "-o", str(tmp_path / "s")]) == 2
    assert "trained on tokens of tokenizer" in capsys.readouterr().err

    assert main(["pretokenize", "--tokenizer", str(other), str(run / "photos"), "-o", str(run / "tokens"),
                 "--flip", "--shard-size", "4", "--workers", "0"]) == 2
    assert "holds tokens made with other settings (tokenizer_hash differ)" in capsys.readouterr().err

    assert main(["sample", "--tokenizer", str(run / "tokenizer"), "--generator", str(run / "run" / "final"),
                 "--classes", "dogs", "-o", str(tmp_path / "s")]) == 2
    assert "'dogs' is neither a class id nor" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(args: list[str]) -> None:
    """`onetok ARGS` in 2 CPU processes (gloo) started by `accelerate launch`."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "onetok.cli.main", *args]
    env = os.environ | {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_processes_write_the_tokens_and_samples_of_one(run, tmp_path):
    launch_two(["pretokenize", "--tokenizer", str(run / "tokenizer"), str(run / "photos"), "-o", str(tmp_path / "tokens"),
                "--flip", "--shard-size", "2", "--batch-size", "3", "--workers", "0"])
    one, two = TokenDataset(run / "tokens"), TokenDataset(tmp_path / "tokens")
    assert len(two.manifest["shards"]) == 3 and len(one) == len(two)
    assert sorted(tuple(ids.tolist()) + (label,) for ids, label in one) == \
        sorted(tuple(ids.tolist()) + (label,) for ids, label in two)

    args = ["sample", "--tokenizer", str(run / "tokenizer"), "--generator", str(run / "run" / "final"),
            "--per-class", "3", "--batch", "2", "--precision", "fp32", "--seed", "4", "--no-images"]
    assert main(args + ["-o", str(tmp_path / "one")]) == 0
    launch_two(args + ["-o", str(tmp_path / "two")])
    one = np.load(tmp_path / "one" / "samples_6x64x64x3.npz")["arr_0"]
    two = np.load(tmp_path / "two" / "samples_6x64x64x3.npz")["arr_0"]
    assert np.array_equal(one, two)


def test_sample_on_the_shipped_models_is_the_pipelines_image(tmp_path):
    """`onetok sample --classes 3 --per-class 1 --seed 7` writes Pipeline.generate([3], seed=7)[0]."""
    from onetok import Pipeline

    assert main(["sample", "--classes", "3", "--per-class", "1", "--seed", "7", "-o", str(tmp_path)]) == 0
    npz = np.load(tmp_path / "samples_1x128x128x3.npz")
    assert npz["arr_1"].tolist() == [3]
    expected = Pipeline.from_pretrained().generate([3], seed=7)[0].permute(1, 2, 0).numpy()
    assert np.abs(npz["arr_0"][0] / 255.0 - expected).max() <= 1 / 255 + 1e-6
    # by name, in a batch that continues after it: the same first image
    name = Pipeline.from_pretrained().class_names[3]
    assert main(["sample", "--classes", f"{name},5", "--per-class", "1", "--seed", "7", "--no-images",
                 "-o", str(tmp_path / "named")]) == 0
    assert np.array_equal(np.load(tmp_path / "named" / "samples_2x128x128x3.npz")["arr_0"][0], npz["arr_0"][0])


def test_sample_rejects_out_of_range_classes(tmp_path, capsys):
    assert main(["sample", "--classes", "3,22", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class id 22 is outside the generator's classes 0..21" in err[0]


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_tars_are_named_not_marked_done_and_a_rerun_after_repair_completes(run, tmp_path, capsys, workers):
    from onetok.data.shards import make_shards

    shards = tmp_path / "shards"
    make_shards(run / "photos", shards, shard_size=2)
    tars = sorted(shards.glob("*.tar"))
    good = {path: path.read_bytes() for path in tars}
    tars[0].write_bytes(good[tars[0]][: len(good[tars[0]]) // 2])  # truncated inside its second image
    tars[2].write_bytes(np.random.default_rng(0).integers(0, 256, len(good[tars[2]]), dtype=np.uint8).tobytes())
    command = ["pretokenize", "--tokenizer", str(run / "tokenizer"), str(shards), "-o", str(tmp_path / "tokens"),
               "--workers", str(workers)]
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"2 of {len(tars)} shards were not written" in err
    assert f"{tars[0]}: unexpected end of data" in err and f"{tars[2]}: invalid header" in err
    assert sorted(p.name for p in (tmp_path / "tokens").glob("tokens-*.npy")) == ["tokens-00001.npy"]
    assert not (tmp_path / "tokens" / "manifest.json").exists()

    for path, data in good.items():
        path.write_bytes(data)
    assert main(command) == 0
    assert read_token_manifest(tmp_path / "tokens")["count"] == len(list((run / "photos").rglob("*.png")))


def test_zero_batch_size_is_one_line_before_loading_the_tokenizer(tmp_path, capsys):
    assert main(["pretokenize", "--tokenizer", str(tmp_path / "nowhere"), str(tmp_path), "-o", str(tmp_path / "t"),
                 "--batch-size", "0"]) == 2
    assert capsys.readouterr().err == "onetok: error: --batch-size must be at least 1, got 0\n"


def test_a_retrained_tokenizer_with_the_same_config_is_refused(run, tmp_path, capsys):
    import yaml

    retrained = TiTok.from_pretrained(run / "tokenizer")
    with torch.no_grad():
        retrained.quantize.embedding.weight.add_(0.01)
    retrained.save_pretrained(tmp_path / "retrained")
    assert TiTok.from_pretrained(tmp_path / "retrained").config.to_dict() == \
        TiTok.from_pretrained(run / "tokenizer").config.to_dict()

    config = tmp_path / "generator.yaml"
    config.write_text(yaml.safe_dump({
        "experiment": {"task": "maskgit", "output_dir": str(tmp_path / "run"), "max_train_steps": 2, "log_with": "none"},
        "model": {"generator": dict(GENERATOR)},
        "dataset": {"tokens": str(run / "tokens"), "tokenizer": str(tmp_path / "retrained")},
    }))
    assert main(["train", "generator", str(config)]) == 2
    assert "pretokenize the data again with the generator's tokenizer" in capsys.readouterr().err
    assert main(["sample", "--tokenizer", str(tmp_path / "retrained"), "--generator", str(run / "run" / "final"),
                 "--per-class", "1", "-o", str(tmp_path / "s")]) == 2
    assert "trained on tokens of tokenizer" in capsys.readouterr().err
