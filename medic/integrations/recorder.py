"""What the Lightning logger and the MONAI handler share: per-step losses in, batch rows and the
epoch row (the nine columns of docs/reference/files.md plus the trainer's other epoch metrics) out.

Every rank calls ``step`` and ``flush`` alike; under ``torch.distributed`` the step losses are
averaged over the ranks in one collective per ``flush_every`` steps (and at the end of an epoch),
so the rows hold global values whatever the trainer itself synchronises. Only rank 0 writes.

The extra columns are those named in ``metrics=``, else those seen by the end of the first epoch
(``note`` adds names seen earlier, e.g. in Lightning's sanity-check validation). A metric first
seen later is not dropped silently: it gets a one-line warning naming ``metrics=``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Iterable, Mapping

import torch
import torch.distributed as torch_dist

from medic.store.columns import EPOCH_COLUMNS
from medic.store.logger import MetricsLogger

FLUSH_EVERY = 10


def as_float(value: Any) -> float | None:
    """A metric value as a float (a tensor of one element, a number), else None."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().item()) if value.numel() == 1 else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def distributed() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def global_mean(values: list, world_size: int) -> list[float]:
    """The mean over ranks of each value (all ranks call this with equally many values)."""
    if not values:
        return []
    tensors = [v.detach().reshape(()).double() if isinstance(v, torch.Tensor)
               else torch.tensor(float(v), dtype=torch.float64) for v in values]
    device = tensors[0].device
    stacked = torch.stack([t.to(device) for t in tensors])
    if world_size > 1:
        if torch_dist.get_backend() == "nccl" and stacked.device.type != "cuda":
            stacked = stacked.cuda()
        torch_dist.all_reduce(stacked, op=torch_dist.ReduceOp.SUM)
        stacked /= world_size
    return stacked.cpu().tolist()


class Recorder:
    """One run's recording for an adapter: ``open``, then ``step`` per training step, ``flush``
    now and then, ``end_epoch`` per epoch, ``close`` at the end."""

    def __init__(self, output_dir, *, log_batch_metrics: bool = False, metrics: Iterable[str] | None = None,
                 flush_every: int = FLUSH_EVERY, source: str = "MetricsLogger"):
        self.output_dir = output_dir
        self.log_batch_metrics = log_batch_metrics
        self.declared = None if metrics is None else tuple(metrics)
        self.flush_every = max(1, int(flush_every))
        self.source = source
        self.logger: MetricsLogger | None = None
        self._run_id: str | None = None
        self.rank, self.world_size = 0, 1
        self.seen: dict[str, None] = {}   # metric names in order of first appearance
        self.warned: set[str] = set()
        self.pending: list = []            # this rank's step losses not yet reduced
        self.pending_lrs: list[float] = []
        self.losses: list[float] = []      # the epoch's global step losses
        self.lrs: list[float] = []
        self.epoch = 0
        self.first_batch = 0
        self.epoch_start = time.perf_counter()

    @property
    def run_id(self) -> str | None:
        """The medic run id (rank 0; None on other ranks and before ``open``)."""
        return self._run_id

    def open(self, *, run_id: str | None = None, resume_epoch: int | None = None,
             hparams: Mapping[str, Any] | None = None, epochs_planned: int | None = None,
             info: Mapping[str, Any] | None = None) -> None:
        """The files (rank 0): a new run (``run_id``: an id already reserved, or None), or the run
        ``run_id`` continued after ``resume_epoch``."""
        self.rank, self.world_size = distributed()
        run_info = {"world_size": self.world_size, "source": self.source, **(info or {})}
        resuming = run_id is not None and resume_epoch is not None
        self.logger = MetricsLogger(self.output_dir, None if resuming else run_id,
                                    log_batch_metrics=self.log_batch_metrics,
                                    extra_columns=self.declared, resume=run_id if resuming else None,
                                    resume_epoch=resume_epoch, rank=self.rank, hparams=hparams,
                                    epochs_planned=epochs_planned, run_info=run_info)
        self._run_id = self.logger.run_id if self.rank == 0 else None
        if self.logger.extra_columns is not None and self.declared is None:  # continuing: the file's columns
            self.declared = self.logger.extra_columns

    def update(self, **fields: Any) -> None:
        if self.logger is not None and self.logger.record is not None:
            self.logger.record.update(**fields)

    def start_epoch(self, epoch: int, first_batch: int = 0) -> None:
        self.epoch, self.first_batch = epoch, first_batch
        self.pending, self.pending_lrs, self.losses, self.lrs = [], [], [], []
        self.epoch_start = time.perf_counter()

    def step(self, loss, lr: float) -> None:
        """One training step's loss (a tensor: no device sync here) and learning rate."""
        if loss is None:
            return
        self.pending.append(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        self.pending_lrs.append(float(lr))
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Reduce the pending step losses over the ranks and write their batch rows."""
        values = global_mean(self.pending, self.world_size)
        if values and self.logger is not None:
            self.logger.log_batches(self.epoch, self.first_batch + len(self.losses), values, self.pending_lrs)
        self.losses += values
        self.lrs += self.pending_lrs
        self.pending, self.pending_lrs = [], []

    def note(self, names: Iterable[str]) -> None:
        """Metric names seen before the first epoch row (they become columns)."""
        for name in names:
            if usable_name(name):
                self.seen.setdefault(name, None)

    def end_epoch(self, metrics: Mapping[str, Any], learning_rate: float | None = None) -> None:
        """The epoch's row from its step losses and the trainer's epoch-level ``metrics``."""
        self.flush()
        seconds = time.perf_counter() - self.epoch_start
        values = {k: as_float(v) for k, v in metrics.items() if usable_name(k)}
        values = {k: v for k, v in values.items() if v is not None}
        if self.declared is None:
            self.note(values)
            self.declared = tuple(n for n in self.seen if not (n.endswith("_epoch") and n[:-6] in self.seen))
        for name in values:
            if name not in self.declared and name not in self.warned and not self._alias(name):
                self.warned.add(name)
                if self.rank == 0:
                    print(f"medic: warning: metric {name!r} first logged in epoch {self.epoch} is not a column "
                          f"of this run's epoch CSV; name it in metrics=[...] to record it", file=sys.stderr)
        finite = [v for v in self.losses if math.isfinite(v)]
        avg = sum(self.losses) / len(self.losses) if self.losses else float("nan")
        lo, hi = (min(finite), max(finite)) if finite else (float("nan"), float("nan"))
        lr = self.lrs[0] if self.lrs else (learning_rate if learning_rate is not None else float("nan"))
        if self.logger is not None:
            self.logger.log_epoch(self.epoch, avg_loss=avg, min_batch_loss=lo, max_batch_loss=hi, learning_rate=lr,
                                  epoch_time=seconds, **{n: values.get(n) for n in self.declared})

    def _alias(self, name: str) -> bool:
        return name.endswith("_epoch") and name[:-6] in self.declared

    def close(self, status: str = "completed", message: str = "") -> None:
        if self.logger is not None:
            self.logger.close(status, message)
            self.logger = None


def usable_name(name: str) -> bool:
    """A logged name that can be an extra column: not per-step, not one of the nine columns, not a counter."""
    return (isinstance(name, str) and not name.endswith("_step") and name not in EPOCH_COLUMNS
            and name not in ("epoch", "step") and "," not in name and "\n" not in name)
