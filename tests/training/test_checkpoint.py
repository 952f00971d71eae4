"""Atomic checkpoints: interrupted saves, partial folders, keep-last pruning, RNG isolation."""
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from onetok.training.checkpoint import (
    CheckpointError, IncompleteCheckpointWarning, latest_checkpoint, list_checkpoints, load_checkpoint,
    preserve_rng,
)
from onetok.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy import ToyTask, toy_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_keep_last_prunes_old_checkpoints(tmp_path, photos):
    config = toy_config(tmp_path, **{"experiment.max_train_steps": 5, "experiment.save_every": 1,
                                     "experiment.keep_last": 2, "training.gradient_accumulation_steps": 1})
    Trainer(config, ToyTask(), photos).train()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-5"
    assert not list(tmp_path.glob(".tmp-*"))


def test_interrupted_save_leaves_no_checkpoint(tmp_path, photos, monkeypatch):
    config = toy_config(tmp_path, **{"experiment.max_train_steps": 4, "experiment.save_every": 2,
                                     "training.gradient_accumulation_steps": 1})
    trainer = Trainer(config, ToyTask(), photos)
    real_save_state = trainer.accelerator.save_state

    def crash_midway(output_dir, **kwargs):
        if output_dir.endswith("-4"):
            real_save_state(output_dir, **kwargs)  # files are on disk, but the marker/rename never happen
            raise OSError("disk full")
        return real_save_state(output_dir, **kwargs)

    monkeypatch.setattr(trainer.accelerator, "save_state", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        trainer.train()
    assert (tmp_path / ".tmp-checkpoint-4").is_dir()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2]

    monkeypatch.undo()
    resumed = Trainer(toy_config(tmp_path, **{"experiment.max_train_steps": 4, "experiment.save_every": 2,
                                              "training.gradient_accumulation_steps": 1}),
                      ToyTask(), photos, resume=True)
    assert resumed.state.step == 2
    resumed.train()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 4]
    assert not (tmp_path / ".tmp-checkpoint-4").exists()


def test_partial_checkpoint_folder_is_ignored_with_a_warning(tmp_path, photos):
    Trainer(toy_config(tmp_path, **{"experiment.max_train_steps": 2, "experiment.save_every": 2}),
            ToyTask(), photos).train()
    partial = tmp_path / "checkpoint-9"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half a file")
    with pytest.warns(IncompleteCheckpointWarning, match="checkpoint-9"):
        assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(Accelerator(cpu=True), partial)


def test_checkpoint_of_another_model_is_refused(tmp_path, photos):
    Trainer(toy_config(tmp_path, **{"experiment.max_train_steps": 1}), ToyTask(), photos).train()
    with pytest.raises(CheckpointError, match="does not fit this run"):
        Trainer(toy_config(tmp_path), ToyTask(discriminator=True), photos, resume=True)


def test_preserve_rng_restores_every_stream():
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    expected = (torch.rand(2), random.random(), np.random.rand())
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    with preserve_rng():
        torch.rand(5), random.random(), np.random.rand(3)
    got = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
