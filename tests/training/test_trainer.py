"""The Trainer on a toy autoencoder over real photos: learning, outputs, Ctrl-C, exact resume."""
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from onetok.training.trainer import EpochBatchSampler, Task, Trainer, TrainingError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy import PhotoCrops, ToyTask, save_photos, toy_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]


def read_metrics(output_dir: Path) -> dict[int, dict[str, str]]:
    with open(output_dir / "logs" / "metrics.csv", newline="") as f:
        return {int(row["step"]): row for row in csv.DictReader(f)}


def test_loss_goes_down_and_outputs_are_written(tmp_path, photos):
    config = toy_config(tmp_path, **{"experiment.max_train_steps": 40, "experiment.save_every": 20,
                                     "experiment.preview_every": 20, "training.gradient_accumulation_steps": 1})
    assert Trainer(config, ToyTask(), photos).train() is True

    losses = [float(row["loss"]) for _, row in sorted(read_metrics(tmp_path).items())]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]
    assert (tmp_path / "previews" / "step-00000040.png").is_file()
    assert (tmp_path / "config.yaml").read_text().count("max_train_steps: 40") == 1
    assert any((tmp_path / "logs" / "tensorboard").iterdir())
    exported = load_file(tmp_path / "final" / "model.safetensors")
    assert set(exported) >= {"encoder.0.weight", "decoder.weight"}


def test_resume_in_a_fresh_process_continues_exactly(tmp_path, photos, sample_photos):
    """SIGTERM at step 4 saves and stops; a new process resumes; steps 5..8 match an uninterrupted run."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    Trainer(toy_config(whole), ToyTask(discriminator=True, discriminator_start=2), photos).train()

    interrupted = Trainer(toy_config(parts), ToyTask(discriminator=True, discriminator_start=2, stop_at=3), photos)
    assert interrupted.train() is False
    assert interrupted.state.step == 4
    assert (parts / "checkpoint-4" / "checkpoint.json").is_file() and not (parts / "final").exists()

    script = REPO / "tests" / "training" / "run_toy.py"
    env = os.environ | {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    photo_file = save_photos(sample_photos, tmp_path / "photos.npz")
    subprocess.run([sys.executable, str(script), str(parts), "--photos", str(photo_file), "--resume",
                    "--discriminator", "experiment.seed=7"], check=True, env=env, capture_output=True, timeout=120)

    before, after = read_metrics(whole), read_metrics(parts)
    assert sorted(after) == list(range(1, 9))
    for step in range(1, 9):
        for name in ("loss", "d_loss", "lr", "grad_norm"):
            assert after[step][name] == before[step][name], (step, name)  # exact float reprs
    assert after[8]["d_loss"] != "" and after[1]["d_loss"] == ""  # the discriminator started at step 2
    final_whole = load_file(whole / "final" / "model.safetensors")
    final_parts = load_file(parts / "final" / "model.safetensors")
    assert all(torch.equal(final_whole[k], final_parts[k]) for k in final_whole)


def test_resume_in_process_mid_epoch(tmp_path, photos):
    """Same exactness in one process, no discriminator, stopping in the middle of an epoch."""
    overrides = {"training.gradient_accumulation_steps": 1, "training.batch_size": 4}  # 2 batches per epoch
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    Trainer(toy_config(whole, **overrides), ToyTask(), photos).train()
    ctrl_c = ToyTask(stop_at=2, stop_signal=signal.SIGINT)
    assert Trainer(toy_config(parts, **overrides), ctrl_c, photos).train() is False
    resumed = Trainer(toy_config(parts, **overrides), ToyTask(), photos, resume=True)
    assert (resumed.state.step, resumed.state.epoch, resumed.state.batch_in_epoch) == (3, 1, 1)
    resumed.train()
    before, after = read_metrics(whole), read_metrics(parts)
    assert [after[s]["loss"] for s in range(1, 9)] == [before[s]["loss"] for s in range(1, 9)]
    ema_whole, ema_parts = load_file(whole / "final" / "model.safetensors"), load_file(parts / "final" / "model.safetensors")
    assert all(torch.equal(ema_whole[k], ema_parts[k]) for k in ema_whole)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; a test with another precision needs it reset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_fp16_autocast_resumes_exactly(tmp_path, photos, fresh_accelerate_state):
    overrides = {"training.mixed_precision": "fp16", "experiment.max_train_steps": 6}
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    trainer = Trainer(toy_config(whole, **overrides), ToyTask(discriminator=True), photos)
    assert trainer.accelerator.mixed_precision == "fp16"  # (on CUDA accelerate adds a grad scaler, checkpointed)
    trainer.train()
    Trainer(toy_config(parts, **overrides), ToyTask(discriminator=True, stop_at=2), photos).train()
    Trainer(toy_config(parts, **overrides), ToyTask(discriminator=True), photos, resume=True).train()
    before, after = read_metrics(whole), read_metrics(parts)
    assert [after[s]["loss"] for s in range(1, 7)] == [before[s]["loss"] for s in range(1, 7)]
    assert [after[s]["d_loss"] for s in range(1, 7)] == [before[s]["d_loss"] for s in range(1, 7)]


def test_refuses_to_overwrite_checkpoints_without_resume(tmp_path, photos):
    Trainer(toy_config(tmp_path, **{"experiment.max_train_steps": 1}), ToyTask(), photos).train()
    with pytest.raises(TrainingError, match="already holds checkpoint-1"):
        Trainer(toy_config(tmp_path), ToyTask(), photos)


def test_task_must_build_a_model(tmp_path, photos):
    class NoModel(Task):
        def build_models(self):
            return {"teacher": torch.nn.Linear(2, 2)}

    with pytest.raises(TrainingError, match="'model' entry"):
        Trainer(toy_config(tmp_path), NoModel(), photos)


def test_sampler_covers_each_epoch_and_splits_processes():
    ranks = [EpochBatchSampler(10, 2, seed=1, epoch=0, rank=r, num_processes=2).batches for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3  # 10 items in global batches of 4 -> 3, wrapped around
    seen = [i for batches in ranks for batch in batches for i in batch]
    assert set(seen) == set(range(10)) and len(seen) == 12
    later = EpochBatchSampler(10, 2, seed=1, epoch=0, rank=1, num_processes=2, start=1).batches
    assert later == ranks[1][1:]
    other_epoch = EpochBatchSampler(10, 2, seed=1, epoch=1, rank=0, num_processes=2).batches
    assert other_epoch != ranks[0]
    keyed = [EpochBatchSampler(10, 2, seed=1, epoch=1, rank=r, num_processes=2, positions=True).batches
             for r in range(2)]
    assert [[index for index, _ in batch] for batch in keyed[0]] == other_epoch
    assert sorted(place for batches in keyed for batch in batches for _, place in batch) == list(range(12, 24))


def test_datasets_that_accept_positions_get_index_position_keys(tmp_path, sample_photos):
    class KeyedCrops(PhotoCrops):
        accepts_position_keys = True

        def __init__(self, photos):
            super().__init__(photos)
            self.keys = []

        def __getitem__(self, key):
            self.keys.append(key)
            return super().__getitem__(key[0] if isinstance(key, tuple) else key)  # previews use ints

    dataset = KeyedCrops(sample_photos)
    config = toy_config(tmp_path, **{"experiment.max_train_steps": 4, "experiment.preview_every": 100})
    Trainer(config, ToyTask(), dataset).train()
    keys = [key for key in dataset.keys if isinstance(key, tuple)]
    assert len(keys) == 16  # 4 steps x 2 micro-batches x 2 images
    assert [place for _, place in keys] == list(range(16))  # fresh positions, also across epochs


def test_previews_do_not_change_the_training_random_stream(tmp_path, photos):
    every_step = Trainer(toy_config(tmp_path / "a", **{"experiment.preview_every": 1}), ToyTask(), photos)
    every_step.train()
    never = Trainer(toy_config(tmp_path / "b", **{"experiment.preview_every": 1000}), ToyTask(), photos)
    never.train()
    assert len(list((tmp_path / "a" / "previews").glob("*.png"))) == 8
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [a[s]["loss"] for s in a] == [b[s]["loss"] for s in b]


def test_second_ctrl_c_aborts_at_once():
    from onetok.training.trainer import _StopSignal

    # CI may start with SIGINT ignored (no terminal): the handler found before is the one restored
    before = signal.getsignal(signal.SIGINT)
    with _StopSignal() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
