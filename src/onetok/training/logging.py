"""Scalar logs of a training run: always a CSV, plus TensorBoard or W&B when asked and installed."""
from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

from onetok.files import atomic_write_bytes

log = logging.getLogger("onetok.training")


class CSVLog:
    """`metrics.csv` with one row per logged step and one column per scalar name.

    When a new scalar appears (e.g. discriminator losses once the GAN starts) the file is rewritten
    with the wider header. On resume, rows after the resumed step are dropped, so the curve has no
    duplicate steps.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                self.rows = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_step]
        self.columns = ["step"] + sorted({k for row in self.rows for k in row} - {"step"})
        self._rewrite()

    def write(self, step: int, scalars: dict[str, float]) -> None:
        row = {"step": step, **scalars}
        self.rows.append(row)
        if set(row) - set(self.columns):
            self.columns = ["step"] + sorted((set(self.columns) | set(row)) - {"step"})
            self._rewrite()
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)

    def _rewrite(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.path, buf.getvalue().encode())


class MetricLogger:
    """Fans scalars out to the CSV and the optional TensorBoard / W&B backends (main process only)."""

    def __init__(
        self,
        log_dir: str | os.PathLike,
        backend: str = "tensorboard",
        resume_step: int | None = None,
        run_name: str = "onetok",
        config: dict[str, Any] | None = None,
    ):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.csv = CSVLog(self.log_dir / "metrics.csv", resume_step)
        self.tensorboard = self.wandb = None
        if backend == "tensorboard":
            self.tensorboard = _tensorboard_writer(self.log_dir / "tensorboard", resume_step)
        elif backend == "wandb":
            self.wandb = _wandb_run(self.log_dir, run_name, config, resume_step is not None)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.csv.write(step, scalars)
        if self.tensorboard is not None:
            for name, value in scalars.items():
                self.tensorboard.add_scalar(name, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _tensorboard_writer(path: Path, resume_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed (pip install 'onetok[train]'); logging to CSV only")
        return None
    # purge_step hides events a crashed run logged after the checkpoint we resume from
    return SummaryWriter(str(path), purge_step=None if resume_step is None else resume_step + 1)


def _wandb_run(path: Path, name: str, config: dict[str, Any] | None, resume: bool):
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed (pip install wandb); logging to CSV only")
        return None
    return wandb.init(project="onetok", name=name, dir=str(path), config=config, resume="allow" if resume else None)
