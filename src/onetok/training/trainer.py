"""One training loop for every model family (TiTok stages, VQGAN, MaskGIT generator) on HF Accelerate.

A model family plugs in as a `Task`: it builds its modules and computes its losses; the `Trainer`
owns everything else (devices and processes, mixed precision, gradient accumulation and clipping,
AdamW + warmup/cosine, EMA, data order, logs, previews, checkpoints, resume, Ctrl-C).

One step = one optimizer step = `gradient_accumulation_steps` micro-batches of `batch_size` images on
each process. The data order is a permutation keyed by (seed, epoch), so a resumed run reads the
same batches as an uninterrupted one, and with the RNG states restored its losses are the same.

Several processes: `accelerate launch --multi_gpu --num_processes N ...` (GPUs: NCCL; a machine without
CUDA: the processes join over gloo on CPU). `accelerate launch --cpu` starts a single process unless MPI
is set up, so `--cpu --num_processes N` is refused. Launched workers stop (saving a checkpoint) when
their launcher dies. One run at a time holds an output folder (`OutputLock`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, send_to_device, set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate
from tqdm.auto import tqdm

from onetok.data.images import make_grid, save_image
from onetok.processes import cpu_only, launched_processes, mix_seed
from onetok.training.checkpoint import (
    OutputLock, latest_checkpoint, load_checkpoint, preserve_rng, remove_husks, save_checkpoint,
)
from onetok.training.config import TrainConfig, save_config
from onetok.training.ema import EMA
from onetok.training.logging import MetricLogger, log
from onetok.training.schedule import build_optimizer, build_scheduler
from onetok.errors import TrainingError

StepOutput = tuple[Tensor, dict[str, float]]


class Task:
    """What a model family supplies to the Trainer. Subclass it and override the methods.

    Before the first step the Trainer sets `self.models` (the dict from `build_models`, with the
    trained entries wrapped for DDP/FSDP and everything on the right device) and `self.accelerator`.
    Use `self.models[...]` in the steps (so gradients are synchronised) and `self.unwrap(...)` for
    plain access (previews, export). `self.ema` is the EMA of "model" (or None): a task that
    overwrites weights outside the optimizer must overwrite their EMA too.
    """

    discriminator_start: int = 0  # first step at which discriminator_step returns a loss
    models: dict[str, nn.Module]
    accelerator: Accelerator
    ema: EMA | None = None

    def build_models(self) -> dict[str, nn.Module]:
        """Return "model" (trained by the main AdamW, EMA'd, exported), optionally "discriminator"
        (its own AdamW), and any frozen helpers (teacher, perceptual net): moved to the device,
        put in eval mode with requires_grad off, not saved in checkpoints."""
        raise NotImplementedError

    def training_step(self, batch: Any, step: int) -> StepOutput:
        """Loss of the main model on one micro-batch, and scalars to log (floats or 0-d tensors)."""
        raise NotImplementedError

    def discriminator_step(self, batch: Any, step: int) -> StepOutput | None:
        """Discriminator loss on the same micro-batch, or None while it is not trained."""
        return None

    def preview(self, batch: Any, step: int) -> Tensor | None:
        """An image (3, H, W) in [0, 1] to save as PNG (e.g. inputs beside reconstructions).
        Runs under torch.no_grad with the EMA weights swapped in."""
        return None

    def export(self, output_dir: Path) -> None:
        """Write the final model (EMA weights swapped in) to `output_dir`; main process only."""

    def stateful_objects(self) -> dict[str, Any]:
        """Extra objects with state_dict/load_state_dict to checkpoint (e.g. LeCAM running means)."""
        return {}

    def unwrap(self, name: str = "model") -> nn.Module:
        return self.accelerator.unwrap_model(self.models[name])


@dataclasses.dataclass
class TrainState:
    """Where training is: optimizer steps done, and the data position (micro-batches read this epoch)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0

    def state_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        for name, value in state.items():
            setattr(self, name, int(value))


class EpochBatchSampler:
    """This process's batches of one epoch, from batch `start` on.

    The epoch is a permutation keyed by (seed, epoch), wrapped around to fill whole global batches;
    global batch b is split into `num_processes` slices and this process takes slice `rank`.
    With `positions`, each key is (index, position): the sample's place in the run's whole sample
    stream, which datasets that key their augmentation by it turn into fresh crops every epoch.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                 num_processes: int = 1, start: int = 0, positions: bool = False):
        generator = torch.Generator().manual_seed(mix_seed(seed, epoch))
        order = torch.randperm(num_items, generator=generator)
        global_batch = batch_size * num_processes
        num_batches = math.ceil(num_items / global_batch)
        epoch_length = num_batches * global_batch
        order = order.repeat(math.ceil(epoch_length / num_items))[:epoch_length]
        order = order.view(num_batches, num_processes, batch_size)[start:, rank]
        if positions:
            place = torch.arange(epoch * epoch_length, (epoch + 1) * epoch_length)
            place = place.view(num_batches, num_processes, batch_size)[start:, rank]
            order = torch.stack([order, place], dim=-1)
        self.batches = [[tuple(key) if positions else key for key in batch] for batch in order.tolist()]

    def __iter__(self) -> Iterator[list]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Trainer:
    """Runs a Task on a dataset as configured; `train()` until max_train_steps or Ctrl-C."""

    def __init__(self, config: TrainConfig, task: Task, dataset: Dataset, *, resume: bool = False,
                 collate_fn: Callable[[list], Any] = default_collate, accelerator: Accelerator | None = None):
        self.config, self.task, self.dataset, self.collate_fn = config, task, dataset, collate_fn
        self.output_dir = Path(config.experiment.output_dir)
        self.accelerator = accelerator or _make_accelerator(config)
        self.lock = OutputLock(self.output_dir) if self.accelerator.is_main_process else None
        try:
            self._start(resume)
        except BaseException:
            self.release()
            raise

    def _start(self, resume: bool) -> None:
        config, task, dataset = self.config, self.task, self.dataset
        if self.accelerator.is_main_process:
            remove_husks(self.output_dir)
        checkpoint = latest_checkpoint(self.output_dir)
        if checkpoint is not None and not resume:
            raise TrainingError(f"{self.output_dir} already holds {checkpoint.name}; resume it or use another output_dir")

        set_seed(config.experiment.seed)  # the same on every process, so every process builds the same models
        self._build(task.build_models())
        set_seed(config.experiment.seed + self.accelerator.process_index)  # augmentations differ per process

        self.state = TrainState()
        for obj in self._stateful():
            self.accelerator.register_for_checkpointing(obj)
        self.last_saved_step = None
        self.resumed_from = checkpoint
        if checkpoint is not None:
            load_checkpoint(self.accelerator, checkpoint, expected=self._data_settings())
            self.last_saved_step = self.state.step
            log.info("resumed from %s at step %d", checkpoint, self.state.step)
            if isinstance(dataset, IterableDataset) and not hasattr(dataset, "state_dict") \
                    and not hasattr(dataset, "resumed_at"):
                log.warning("%s is a stream without state_dict: it restarts from its beginning, so the data "
                            "order differs from an uninterrupted run", type(dataset).__name__)
        elif resume:
            log.info("no checkpoint in %s: starting from scratch", self.output_dir)

        self.logger = None
        if self.accelerator.is_main_process:
            save_config(config, self.output_dir / "config.yaml")
            self.logger = MetricLogger(self.output_dir / "logs", config.experiment.log_with,
                                       resume_step=self.last_saved_step, run_name=config.experiment.name,
                                       config=config.to_dict())
        if "LOCAL_RANK" in os.environ:  # a worker of `accelerate launch` / torchrun
            _stop_with_launcher()

    def release(self) -> None:
        """Give the output folder back (done by train(); the kernel does it if the process dies)."""
        if self.lock is not None:
            self.lock.release()

    def _data_settings(self) -> dict[str, int]:
        """What the data position of a checkpoint depends on (recorded in it, compared on resume)."""
        train = self.config.training
        return {"batch_size": train.batch_size, "gradient_accumulation_steps": train.gradient_accumulation_steps,
                "num_processes": self.accelerator.num_processes}

    # --- setup -----------------------------------------------------------------------------------

    def _build(self, models: dict[str, nn.Module]) -> None:
        if "model" not in models:
            raise TrainingError(f"{type(self.task).__name__}.build_models() must return a 'model' entry")
        acc, cfg = self.accelerator, self.config
        total = cfg.experiment.max_train_steps
        prepared = {name: module.to(acc.device).eval().requires_grad_(False)
                    for name, module in models.items() if name not in ("model", "discriminator")}
        # each trained module is prepared together with its optimizer (FSDP swaps the parameters)
        prepared["model"], self.optimizer = acc.prepare(models["model"], build_optimizer(models["model"], cfg.optimizer))
        self.scheduler = build_scheduler(self.optimizer, cfg.lr_scheduler.warmup_steps, total, cfg.lr_scheduler.end_lr)
        self.d_optimizer = self.d_scheduler = None
        if "discriminator" in models:
            d_lr = cfg.optimizer.discriminator_lr or cfg.optimizer.lr
            d_optimizer = build_optimizer(models["discriminator"], cfg.optimizer, lr=d_lr)
            prepared["discriminator"], self.d_optimizer = acc.prepare(models["discriminator"], d_optimizer)
            d_total = max(1, total - self.task.discriminator_start)  # D's schedule starts when D does
            self.d_scheduler = build_scheduler(self.d_optimizer, cfg.lr_scheduler.warmup_steps, d_total,
                                               cfg.lr_scheduler.end_lr)
        self.ema = None
        if cfg.training.use_ema:
            if acc.distributed_type == DistributedType.FSDP:
                raise TrainingError("training.use_ema is not supported with FSDP yet (the EMA would be per shard)")
            self.ema = EMA(acc.unwrap_model(prepared["model"]), cfg.training.ema_decay)
        self.models = prepared
        self.task.models, self.task.accelerator, self.task.ema = prepared, acc, self.ema

    def _stateful(self) -> list[Any]:
        """Objects checkpointed besides models/optimizers; the order is part of the checkpoint format."""
        objects = [self.scheduler, self.d_scheduler, self.ema]
        objects += [obj for _, obj in sorted(self.task.stateful_objects().items())]
        if hasattr(self.dataset, "state_dict") and isinstance(self.dataset, IterableDataset):
            objects.append(self.dataset)
        return [self.state] + [obj for obj in objects if obj is not None]

    # --- data ------------------------------------------------------------------------------------

    def _batches(self) -> Iterator[Any]:
        """Endless stream of micro-batches on the device, advancing `self.state`'s data position."""
        while True:
            for batch in self._epoch_loader():
                self.state.batch_in_epoch += 1
                yield send_to_device(batch, self.accelerator.device)
            self.state.epoch += 1
            self.state.batch_in_epoch = 0

    def _epoch_loader(self) -> DataLoader:
        acc, train, seed = self.accelerator, self.config.training, self.config.experiment.seed
        # its own generator: creating the loader must not draw from the global RNG (exact resume)
        generator = torch.Generator().manual_seed(
            mix_seed(seed, self.state.epoch, acc.process_index, self.state.batch_in_epoch))
        common = dict(num_workers=train.num_workers, collate_fn=self.collate_fn, generator=generator,
                      pin_memory=acc.device.type == "cuda")
        if isinstance(self.dataset, IterableDataset):  # streams shard themselves across processes
            stream = self.dataset
            if hasattr(stream, "resumed_at"):  # replays its pass `epoch` up to the data position
                stream = stream.resumed_at(self.state.epoch, self.state.batch_in_epoch, train.batch_size,
                                           train.num_workers)
            return DataLoader(stream, batch_size=train.batch_size, **common)
        sampler = EpochBatchSampler(len(self.dataset), train.batch_size, seed, self.state.epoch,
                                    acc.process_index, acc.num_processes, start=self.state.batch_in_epoch,
                                    positions=getattr(self.dataset, "accepts_position_keys", False))
        return DataLoader(self.dataset, batch_sampler=sampler, **common)

    def _preview_batch(self, size: int = 8) -> Any:
        with preserve_rng():
            if isinstance(self.dataset, IterableDataset):
                batch = next(iter(DataLoader(self.dataset, batch_size=size, collate_fn=self.collate_fn)))
            else:
                batch = self.collate_fn([self.dataset[i] for i in range(min(size, len(self.dataset)))])
        return send_to_device(batch, self.accelerator.device)

    # --- the loop --------------------------------------------------------------------------------

    def train(self) -> bool:
        """Train to max_train_steps; returns False if stopped early by Ctrl-C / SIGTERM (after saving)."""
        try:
            return self._train()
        finally:
            self.release()

    def _train(self) -> bool:
        exp, acc = self.config.experiment, self.accelerator
        batches, preview_batch = self._batches(), self._preview_batch()
        meter = _Meter()
        bar = tqdm(total=exp.max_train_steps, initial=self.state.step, disable=not acc.is_main_process,
                   dynamic_ncols=True)
        with _StopSignal() as stop:
            while self.state.step < exp.max_train_steps and not self._stop_agreed(stop):
                start = time.perf_counter()
                micro_batches = [next(batches) for _ in range(self.config.training.gradient_accumulation_steps)]
                scalars = self._optimize(micro_batches)
                self.state.step += 1
                meter.add(scalars, time.perf_counter() - start, self._images_per_step())
                bar.update(1)
                if self.state.step % exp.log_every == 0:
                    bar.set_postfix(self._log(meter), refresh=False)
                if self.state.step % exp.save_every == 0:
                    self.save()
                if self.state.step % exp.preview_every == 0:
                    self.write_preview(preview_batch)
        bar.close()
        finished = self.state.step >= exp.max_train_steps
        if self.last_saved_step != self.state.step:
            self.save()
        if finished:
            self.export()
        if self.logger is not None:
            self.logger.close()
        return finished

    def _optimize(self, micro_batches: list[Any]) -> dict[str, float]:
        scalars = _Mean()
        model = self.models["model"]
        for i, batch in enumerate(micro_batches):
            out = self._backward(model, self.task.training_step, batch, i, len(micro_batches))
            scalars.add({"loss": out[0], **out[1]})
        scalars.add(self._step(model, self.optimizer, self.scheduler, prefix=""))

        if self.d_optimizer is not None:
            discriminator = self.models["discriminator"]
            self.d_optimizer.zero_grad(set_to_none=True)  # drop what the main loss's backward put there
            trained = False
            for i, batch in enumerate(micro_batches):
                out = self._backward(discriminator, self.task.discriminator_step, batch, i, len(micro_batches))
                if out is None:
                    break
                scalars.add({"d_loss": out[0], **out[1]})
                trained = True
            if trained:
                scalars.add(self._step(discriminator, self.d_optimizer, self.d_scheduler, prefix="d_"))
            self.d_optimizer.zero_grad(set_to_none=True)

        if self.ema is not None:
            self.ema.update(self.accelerator.unwrap_model(model))
        return scalars.means()

    def _backward(self, model: nn.Module, loss_fn: Callable[[Any, int], StepOutput | None], batch: Any,
                  index: int, count: int) -> tuple[float, dict[str, float]] | None:
        """Forward under autocast and backward of one micro-batch; gradients sync on the last one only."""
        last = index == count - 1
        with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
            with self.accelerator.autocast():
                out = loss_fn(batch, self.state.step)
            if out is None:
                return None
            loss, logs = out
            self.accelerator.backward(loss / count)
        return loss.item(), logs

    def _step(self, model: nn.Module, optimizer, scheduler, prefix: str) -> dict[str, float]:
        out = {f"{prefix}lr": scheduler.get_last_lr()[0]}
        max_norm = self.config.training.max_grad_norm
        if max_norm:
            out[f"{prefix}grad_norm"] = float(self.accelerator.clip_grad_norm_(model.parameters(), max_norm))
        optimizer.step()
        if not optimizer.step_was_skipped:  # fp16 overflow: the schedule waits for a real step
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return out

    def _images_per_step(self) -> int:
        train = self.config.training
        return train.batch_size * train.gradient_accumulation_steps * self.accelerator.num_processes

    def _stop_agreed(self, stop: _StopSignal) -> bool:
        """Every process stops at the same step, whichever got the signal."""
        if self.accelerator.num_processes == 1:
            return stop.requested
        flag = torch.tensor(float(stop.requested), device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    # --- outputs ---------------------------------------------------------------------------------

    def _log(self, meter: _Meter) -> dict[str, str]:
        scalars = meter.pop()
        names = sorted(scalars)
        values = torch.tensor([scalars[n] for n in names], device=self.accelerator.device, dtype=torch.float64)
        values = self.accelerator.reduce(values, reduction="mean").tolist()  # a collective: all processes
        scalars = dict(zip(names, values)) | {"epoch": self.state.epoch}
        if self.logger is not None:
            self.logger.log(self.state.step, scalars)
        return {"loss": f"{scalars['loss']:.4f}", "img/s": f"{scalars['images_per_s']:.1f}"}

    def save(self) -> Path:
        with preserve_rng():
            unwrapped = {name: self.accelerator.unwrap_model(self.models[name])
                         for name in ("model", "discriminator") if name in self.models}
            path = save_checkpoint(self.accelerator, self.output_dir, self.state.step, unwrapped,
                                   keep_last=self.config.experiment.keep_last, settings=self._data_settings())
        self.last_saved_step = self.state.step
        return path

    def write_preview(self, batch: Any) -> Path | None:
        """Ask the task for a preview image (EMA weights, eval mode) and save it as PNG."""
        path = self.output_dir / "previews" / f"step-{self.state.step:08d}.png"
        with preserve_rng(), torch.no_grad(), self._ema_weights(), _eval_mode(self.models.values()):
            image = self.task.preview(batch, self.state.step)
        if image is None or not self.accelerator.is_main_process:
            return None
        save_image(image if image.ndim == 3 else make_grid(image), path)
        return path

    def export(self) -> None:
        with self._ema_weights():
            if self.accelerator.is_main_process:
                self.task.export(self.output_dir / "final")
        self.accelerator.wait_for_everyone()

    def _ema_weights(self) -> contextlib.AbstractContextManager:
        if self.ema is None:
            return contextlib.nullcontext()
        return self.ema.swap_in(self.accelerator.unwrap_model(self.models["model"]))


def _make_accelerator(config: TrainConfig) -> Accelerator:
    train = config.training
    launched = launched_processes()
    accelerator = Accelerator(
        cpu=cpu_only(),
        mixed_precision=train.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=train.find_unused_parameters)],
    )
    if launched > 1 and accelerator.num_processes == 1:
        raise TrainingError(f"{launched} processes were launched but accelerate joined {accelerator.num_processes}")
    asked = _processes_asked_of_cpu_launcher()
    if asked > accelerator.num_processes:
        raise TrainingError(f"`accelerate launch --cpu` started 1 process, not the {asked} asked for; use "
                            f"`accelerate launch --multi_gpu --num_processes {asked}` (without CUDA the processes "
                            "join over gloo on the CPU)")
    return accelerator


def _processes_asked_of_cpu_launcher() -> int:
    """--num_processes on the command line of the `accelerate launch --cpu` that started this process
    (its single-process launcher ignores it); 1 when not started that way."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() != "true" or "WORLD_SIZE" in os.environ:
        return 1
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return 1
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--num_processes=") else (
            argv[i + 1] if arg == "--num_processes" and i + 1 < len(argv) else None)
        if value is not None and re.fullmatch(r"\d+", value):
            return int(value)
    return 1


def _stop_with_launcher(poll_s: float = 0.5, grace_s: float = 120.0) -> None:
    """Stop this worker when its launcher dies: the launcher runs the workers in their own sessions,
    so killing its process group leaves them running (and racing a resume). The worker gets SIGTERM
    (save at the end of this step, stop); one still alive `grace_s` later (e.g. stuck in a collective
    with a dead peer) exits."""
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_s)
        log.warning("the launcher (pid %d) is gone: stopping this worker", launcher)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


class _Mean:
    """Mean of each named scalar over the values added."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.sums[name] += float(value)
            self.counts[name] += 1

    def means(self) -> dict[str, float]:
        return {name: self.sums[name] / self.counts[name] for name in self.sums}


class _Meter:
    """Scalars and throughput accumulated between two log lines."""

    def __init__(self):
        self.scalars, self.seconds, self.images = _Mean(), 0.0, 0

    def add(self, scalars: dict[str, float], seconds: float, images: int) -> None:
        self.scalars.add(scalars)
        self.seconds += seconds
        self.images += images

    def pop(self) -> dict[str, float]:
        out = self.scalars.means() | {"images_per_s": self.images / max(self.seconds, 1e-9)}
        self.__init__()
        return out


class _StopSignal:
    """First Ctrl-C / SIGTERM: finish the current step, save, stop. Second Ctrl-C: abort at once."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("%s: saving a checkpoint after this step, then stopping (Ctrl-C again aborts)",
                    signal.Signals(signum).name)


@contextlib.contextmanager
def _eval_mode(modules: Iterator[nn.Module]) -> Iterator[None]:
    modules = list(modules)
    modes = [m.training for m in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


