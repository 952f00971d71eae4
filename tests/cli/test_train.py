"""`onetok train` through the CLI entry point on real photos with tiny configs: WebDataset shards resume
exactly after SIGKILL, every config key is checked before anything is written, one run per output folder."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from onetok.cli.main import main
from onetok.data.shards import make_shards

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
ENV = os.environ | {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
TOKENIZER_TREE = {
    "experiment": {"task": "titok_single_stage", "max_train_steps": 12, "save_every": 4, "log_every": 1,
                   "preview_every": 1000, "keep_last": 10, "log_with": "none", "seed": 3},
    "model": {"vq_model": {"codebook_size": 64, "token_size": 12, "vit_enc_model_size": "tiny",
                           "vit_dec_model_size": "tiny", "num_latent_tokens": 8, "finetune_decoder": False,
                           "is_legacy": False}},
    "losses": {"perceptual_loss": "none", "perceptual_weight": 0.0, "discriminator_weight": 0.0,
               "quantizer_weight": 1.0},
    "dataset": {"shuffle_buffer": 4,
                "preprocessing": {"crop_size": 32, "random_resized_crop_scale": [0.3, 1.0]}},
    "optimizer": {"lr": 1e-3},
    "training": {"batch_size": 2, "use_ema": True, "ema_decay": 0.9},
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory, sample_photos) -> Path:
    """The sample photos, one class each, in 3 tar shards written by the shard writer."""
    root = tmp_path_factory.mktemp("shards")
    for i, photo in enumerate(sample_photos):
        (root / "photos" / f"photo{i}").mkdir(parents=True)
        Image.fromarray(photo).resize((48, 40)).save(root / "photos" / f"photo{i}" / "image.png")
    make_shards(root / "photos", root / "tars", shard_size=2)
    return root / "tars"


def write_config(path: Path, output_dir: Path, train: Path | str, **experiment) -> Path:
    tree = yaml.safe_load(yaml.safe_dump(TOKENIZER_TREE))
    tree["experiment"].update(output_dir=str(output_dir), **experiment)
    tree["dataset"]["train"] = str(train)
    path.write_text(yaml.safe_dump(tree))
    return path


def losses(output_dir: Path) -> dict[int, str]:
    with open(output_dir / "logs" / "metrics.csv", newline="") as f:
        return {int(row["step"]): row["loss"] for row in csv.DictReader(f)}


def start_train(config: Path, *arguments: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "onetok.cli.main", "train", "tokenizer", str(config), *arguments],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_shard_training_resumes_exactly_after_sigkill(tmp_path, shards, capsys, caplog):
    steps = 40
    whole = write_config(tmp_path / "whole.yaml", tmp_path / "whole", shards, max_train_steps=steps)
    assert main(["train", "tokenizer", str(whole)]) == 0

    parts_dir = tmp_path / "parts"
    parts = write_config(tmp_path / "parts.yaml", parts_dir, shards, max_train_steps=steps)
    process = start_train(parts)
    wait_for(lambda: (parts_dir / "checkpoint-8" / "checkpoint.json").is_file(), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(int(p.name.split("-")[1]) for p in parts_dir.glob("checkpoint-*"))
    assert killed_at < steps and not (parts_dir / "final").exists()

    capsys.readouterr()
    assert main(["train", "tokenizer", str(parts), "--resume"]) == 0
    assert f"resuming {parts_dir / f'checkpoint-{killed_at}'} at step {killed_at}" in capsys.readouterr().out
    assert "no longer running" in caplog.text  # the killed run's lock, taken over
    before, after = losses(tmp_path / "whole"), losses(parts_dir)
    assert sorted(after) == list(range(1, steps + 1))
    assert [after[s] for s in range(1, steps + 1)] == [before[s] for s in range(1, steps + 1)]


def test_each_pass_over_the_shards_has_new_orders_and_crops(tmp_path, shards, sample_photos):
    """The stream `onetok train` builds from shards: pass 2 is not a replay of pass 1."""
    from itertools import islice

    import torch

    from onetok.cli.train import _dataset
    from onetok.training.config import load_config

    config = load_config(write_config(tmp_path / "run.yaml", tmp_path / "run", shards))
    n = len(sample_photos)
    stream = list(islice(iter(_dataset(config)), 3 * n))
    labels = [s["label"] for s in stream]
    assert sorted(set(labels)) == list(range(n))
    assert labels[:n] != labels[n:2 * n] != labels[2 * n:]
    first_seen: dict[int, torch.Tensor] = {}
    repeats = 0
    for sample in stream:
        if sample["label"] in first_seen:
            assert not torch.equal(first_seen[sample["label"]], sample["image"])  # another crop of it
            repeats += 1
        first_seen.setdefault(sample["label"], sample["image"])
    assert repeats >= n


@pytest.mark.parametrize("what, override, key", [
    ("tokenizer", "+dataset.preprocessing.crop_sise=64", "'dataset.preprocessing.crop_sise' (did you mean 'crop_size'?)"),
    ("tokenizer", "+model.vq_model.codebok_size=64", "'model.vq_model.codebok_size' (did you mean 'codebook_size'?)"),
    ("tokenizer", "+losses.reconstruction_wieght=1", "'losses.reconstruction_wieght' (did you mean 'reconstruction_weight'?)"),
    ("tokenizer", "+model.warm_start.kmeans_step=2", "'model.warm_start.kmeans_step' (did you mean 'kmeans_steps'?)"),
    ("tokenizer", "+dataset.shufle_buffer=2", "'dataset.shufle_buffer' (did you mean 'shuffle_buffer'?)"),
    ("tokenizer", "training.batchsize=2", "'training.batchsize' (did you mean 'batch_size'?)"),
    ("tokenizer", "experiment.save_evry=2", "'experiment.save_evry' (did you mean 'save_every'?)"),
    ("tokenizer", "optimizer.learning_rate=2", "'optimizer.learning_rate'"),
    ("tokenizer", "lr_scheduler.warmup=2", "'lr_scheduler.warmup' (did you mean 'warmup_steps'?)"),
    ("tokenizer", "model.vq_model.codebook_size='64'", "model.vq_model.codebook_size must be an integer, got '64'"),
    ("tokenizer", "dataset.preprocessing.crop_size='64'", "dataset.preprocessing.crop_size must be an integer"),
    ("tokenizer", "dataset.preprocessing.random_resized_crop_scale=0.5",
     "dataset.preprocessing.random_resized_crop_scale must be a list of 2 values"),
    ("tokenizer", "+losses.reconstruction_weight=high", "losses.reconstruction_weight must be a number, got 'high'"),
    ("tokenizer", "training.batch_size=two", "training.batch_size must be an integer"),
    ("generator", "+model.generator.hidden_sise=8", "'model.generator.hidden_sise' (did you mean 'hidden_size'?)"),
    ("generator", "+losses.label_smoothin=0.1", "'losses.label_smoothin' (did you mean 'label_smoothing'?)"),
    ("generator", "+dataset.tokenz=x", "'dataset.tokenz' (did you mean 'tokens'?)"),
    ("generator", "model.generator.condition_num_classes=many",
     "model.generator.condition_num_classes must be an integer or 'auto'"),
])
def test_every_bad_key_or_type_is_one_line_before_anything_is_written(tmp_path, shards, capsys, what, override, key):
    output = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", output, shards)
    if what == "generator":  # the shipped quickstart recipe, pointed at a fresh folder
        tree = yaml.safe_load((REPO / "configs" / "cpu_quickstart_generator.yaml").read_text())
        tree["experiment"]["output_dir"] = str(output)
        config.write_text(yaml.safe_dump(tree))
    assert main(["train", what, str(config), override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err, err
    assert not output.exists()


def test_a_second_train_on_a_live_runs_folder_refuses_while_the_first_finishes(tmp_path, shards, capsys):
    output = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", output, shards, max_train_steps=80, save_every=40)
    first = start_train(config)
    wait_for(lambda: (output / "logs" / "metrics.csv").is_file(), first)  # it holds the lock and trains
    assert main(["train", "tokenizer", str(config), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{output} is in use by a running training (pid {first.pid}" in err
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    assert sorted(losses(output)) == list(range(1, 81))  # one run's rows, no duplicates


def launcher_children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except FileNotFoundError:
        return False


def accelerate_launch(*arguments: str, **options) -> subprocess.Popen:
    from tests.training.test_distributed import free_port

    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(free_port()), *arguments]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)


def test_workers_stop_when_their_launcher_dies(tmp_path, sample_photos):
    from tests.training.toy import save_photos

    photos = save_photos(sample_photos, tmp_path / "photos.npz")
    launcher = accelerate_launch("--multi_gpu", "--num_processes", "2", str(REPO / "tests" / "training" / "run_toy.py"),
                                 str(tmp_path / "run"), "--photos", str(photos), "experiment.max_train_steps=100000",
                                 "experiment.save_every=100000", start_new_session=True)
    wait_for(lambda: (tmp_path / "run" / "logs" / "metrics.csv").is_file(), launcher)
    workers = launcher_children(launcher.pid)
    assert len(workers) == 2
    launcher.send_signal(signal.SIGKILL)  # the launcher only: the workers run in their own sessions
    launcher.wait()
    deadline = time.monotonic() + 60
    while any(running(pid) for pid in workers):
        assert time.monotonic() < deadline, "the workers outlived their launcher"
        time.sleep(0.1)
    saved = list((tmp_path / "run").glob("checkpoint-*"))  # they stopped as on SIGTERM: saved, then exited
    assert len(saved) == 1 and not (tmp_path / "run" / "final").exists()


def test_cpu_launcher_asked_for_two_processes_is_refused(tmp_path, shards):
    config = write_config(tmp_path / "run.yaml", tmp_path / "run", shards)
    launcher = accelerate_launch("--cpu", "--num_processes", "2", "-m", "onetok.cli.main", "train", "tokenizer",
                                 str(config))
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "onetok: error: `accelerate launch --cpu` started 1 process, not the 2 asked for" in err, err[-2000:]
    assert not (tmp_path / "run" / "logs").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, shards) -> Path:
    """A tiny run of 8 steps with checkpoints 4 and 8, to resume in copies."""
    root = tmp_path_factory.mktemp("finished")
    config = write_config(root / "run.yaml", root / "run", shards, max_train_steps=8, keep_last=2)
    assert main(["train", "tokenizer", str(config)]) == 0
    return root / "run"


def resume_copy(tmp_path: Path, finished_run: Path, *overrides: str) -> tuple[Path, list[str]]:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    config = write_config(tmp_path / "run.yaml", run, "unused", max_train_steps=12, keep_last=2)
    config.write_text(config.read_text().replace("unused", str(yaml.safe_load(
        (finished_run / "config.yaml").read_text())["dataset"]["train"])))
    return run, ["train", "tokenizer", str(config), *overrides, "--resume"]


def test_a_kill_while_pruning_leaves_no_checkpoint_husk(tmp_path, finished_run, monkeypatch, recwarn):
    import shutil

    from onetok.training import checkpoint

    run, command = resume_copy(tmp_path, finished_run)
    real_rmtree = shutil.rmtree

    def die_while_pruning(path, *args, **kwargs):
        if Path(path).name.startswith(".pruned-"):
            (Path(path) / "checkpoint.json").unlink()  # part of it is gone, then the process is killed
            raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", die_while_pruning)
    assert main(command) == 130
    assert sorted(p.name for p in run.glob("*checkpoint-*")) == [".pruned-checkpoint-4", "checkpoint-12", "checkpoint-8"]
    monkeypatch.setattr(checkpoint.shutil, "rmtree", real_rmtree)
    assert main(command[:-1] + ["experiment.max_train_steps=16", "--resume"]) == 0
    assert sorted(p.name for p in run.glob("*checkpoint-*")) == ["checkpoint-12", "checkpoint-16"]
    assert not [w for w in recwarn if issubclass(w.category, checkpoint.IncompleteCheckpointWarning)]


def test_truncated_random_states_warn_that_the_resume_is_inexact(tmp_path, finished_run):
    from onetok.training.checkpoint import InexactResumeWarning

    run, command = resume_copy(tmp_path, finished_run)
    states = run / "checkpoint-8" / "random_states_0.pkl"
    states.write_bytes(states.read_bytes()[:50])
    with pytest.warns(InexactResumeWarning, match="random_states_0.pkl is unreadable"):
        assert main(command) == 0


def test_resuming_with_another_batch_size_warns(tmp_path, finished_run):
    from onetok.training.checkpoint import InexactResumeWarning

    _, command = resume_copy(tmp_path, finished_run, "training.batch_size=3")
    with pytest.warns(InexactResumeWarning, match="training.batch_size 2 and is resumed with 3"):
        assert main(command) == 0


def test_resuming_from_truncated_weights_is_one_line(tmp_path, finished_run, capsys):
    run, command = resume_copy(tmp_path, finished_run)
    weights = run / "checkpoint-8" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"checkpoint {run / 'checkpoint-8'} is damaged" in err, err


def test_training_on_shards_names_a_corrupt_tar(tmp_path, shards, caplog):
    import shutil

    from onetok.data.sources import skip_log

    broken = tmp_path / "tars"
    shutil.copytree(shards, broken)
    tar = sorted(broken.glob("*.tar"))[1]
    tar.write_bytes(tar.read_bytes()[:2000])
    before = skip_log.count
    config = write_config(tmp_path / "run.yaml", tmp_path / "run", broken, max_train_steps=4)
    assert main(["train", "tokenizer", str(config)]) == 0
    assert f"skipping unreadable image {tar} (corrupt shard, read up to here: unexpected end of data)" in caplog.text
    assert skip_log.count == before + 1  # counted once, although every pass meets it
