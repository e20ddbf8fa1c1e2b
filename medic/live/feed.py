"""What the live monitor knows about a run: its rows, read incrementally, and where it stands.

``RunFeed.poll()`` reads only what is new in the epoch CSV and batch CSV (``CsvTail``), the newest
progress line of the training log and the sidecar; ``progress()`` turns that into the position
(epoch, batch), the fraction done and an ETA. No widgets, no plotting: the same feed serves the
interactive and the headless monitor and can be tested without a kernel.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medic.store import columns as C
from medic.store.paths import Project
from medic.store.sidecar import read_sidecar
from medic.store.tail import CsvTail

# the trainer's progress line, in either language: "Epoch [3/10] - ... (12/171) - Batch Loss: 0.52"
PROGRESS_RE = re.compile(rb"Epoch \[(\d+)/(\d+)\][^(\n]*\((\d+)/(\d+)\) - Batch Loss: ([^\s]+)")


def _num(text: str) -> float:
    if text in ("True", "False"):
        return 1.0 if text == "True" else 0.0
    try:
        return float(text)
    except ValueError:
        return math.nan


def _parse_time(text: str | None) -> float | None:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S")) if text else None
    except (TypeError, ValueError):
        return None


# the one rendering of a duration or ETA (medic.store.columns), under its public name here
format_seconds = C.format_duration


@dataclass
class Progress:
    """Where a run stands. ``batch`` counts the batches done in ``epoch``, the epoch in progress."""

    status: str
    epochs_done: int
    epochs_total: int | None
    epoch: int | None
    batch: int | None
    batches_per_epoch: int | None
    fraction: float | None
    eta_seconds: float | None

    def text(self) -> str:
        parts = [f"epoch {self.epochs_done}/{self.epochs_total or '?'} done"]
        if self.epoch is not None and self.batch is not None:
            parts.append(f"epoch {self.epoch}: batch {self.batch}/{self.batches_per_epoch or '?'}")
        if self.fraction is not None:
            parts.append(f"{100 * self.fraction:.1f}%")
        if self.status == "running":
            parts.append(f"ETA {format_seconds(self.eta_seconds)}")
        return f"{self.status} · " + " · ".join(parts)


class _LineTail:
    """The newest progress line of a growing log, read incrementally (whole lines only)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.pending, self.last = path, 0, b"", None

    def poll(self) -> tuple | None:
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return self.last
        if size < self.offset:
            self.offset, self.pending = 0, b""
        if size > self.offset:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = self.pending + f.read(size - self.offset)
            self.offset = size
            cut = data.rfind(b"\n") + 1
            self.pending = data[cut:]
            matches = PROGRESS_RE.findall(data[:cut])
            if matches:
                e, total, b, per, loss = matches[-1]
                self.last = (int(e), int(total), int(b), int(per), _num(loss.decode(errors="replace")))
        return self.last


class RunFeed:
    """Everything the monitor knows about one run, updated by ``poll()``."""

    def __init__(self, run_id: str, project: Project):
        self.run_id = run_id
        self.project = project
        self._epoch_tail = CsvTail(project.epoch_csv(run_id))
        self._batch_tail = CsvTail(project.batch_csv(run_id))
        self._log_tail = _LineTail(project.log_file(run_id))
        self.columns: list[str] = []
        self._epochs: dict[str, list] = {}
        self._batches: tuple[list[int], list[int], list[float]] = ([], [], [])
        self.sidecar: dict[str, Any] | None = None
        self.log_position: tuple | None = None

    def read_sidecar(self) -> dict[str, Any] | None:
        """The sidecar now (the last good read stays while it is missing or being replaced)."""
        self.sidecar = read_sidecar(self.project.sidecar(self.run_id)) or self.sidecar
        return self.sidecar

    def poll(self) -> bool:
        """Read what is new; True when new epoch or batch rows arrived."""
        self.read_sidecar()
        self.log_position = self._log_tail.poll()
        rows = self._epoch_tail.poll()
        if self._epoch_tail.reset or (self._epoch_tail.header and self._epoch_tail.header != self.columns):
            self.columns = list(self._epoch_tail.header or [])
            self._epochs = {c: [] for c in self.columns}
        for row in rows:
            for name, cell in zip(self.columns, row):
                self._epochs[name].append(cell if name == C.TIMESTAMP else _num(cell))
        brows = self._batch_tail.poll()
        if self._batch_tail.reset:
            self._batches = ([], [], [])
        for row in brows:
            if len(row) >= 3 and row[0].isdigit() and row[1].isdigit():
                self._batches[0].append(int(row[0]))
                self._batches[1].append(int(row[1]))
                self._batches[2].append(_num(row[2]))
        return bool(rows or brows or self._epoch_tail.reset or self._batch_tail.reset)

    # -- data -----------------------------------------------------------------------------------
    def epoch_values(self, name: str) -> list:
        return self._epochs.get(name, [])

    @property
    def extra_columns(self) -> list[str]:
        """The metric columns after the standard ones (the timing columns left out)."""
        return C.metric_columns(self.columns)

    @property
    def monitor(self) -> str:
        """The column that Best_Loss_So_Far tracks (the sidecar's; Avg_Loss without one)."""
        side = self.sidecar or {}
        return str(side.get("monitor") or (side.get("config") or {}).get("monitor") or C.AVG_LOSS)

    @property
    def monitor_mode(self) -> str:
        """``min`` or ``max``: the sidecar's, else the registry's direction of the monitor."""
        return C.direction(self.monitor, (self.sidecar or {}).get("monitor_mode"))

    def samples_per_s(self) -> float:
        """The last epoch's throughput (NaN before the first epoch, or without the column)."""
        values = self.epoch_values(C.SAMPLES_PER_SECOND)
        return float(values[-1]) if values else math.nan

    @property
    def epochs_done(self) -> int:
        ep = self.epoch_values(C.EPOCH)
        return int(ep[-1]) if ep else 0

    @property
    def logs_batches(self) -> bool:
        return bool(self._batches[0]) or bool((self.sidecar or {}).get("log_batch_metrics"))

    @property
    def batches_per_epoch(self) -> int | None:
        per = (self.sidecar or {}).get("batches_per_epoch")
        if isinstance(per, int) and per > 0:
            return per
        if self.log_position:
            return self.log_position[3]
        return max(self._batches[1]) + 1 if self._batches[1] else None

    def batch_series(self):
        """(x, loss) of the logged batches, x in epochs: epoch 1's batches lie in (0, 1]."""
        import numpy as np
        e = np.asarray(self._batches[0], dtype=float)
        b = np.asarray(self._batches[1], dtype=float)
        per = self.batches_per_epoch or (b.max() + 1 if len(b) else 1)
        return e - 1 + (b + 1) / per, np.asarray(self._batches[2], dtype=float)

    def latest(self) -> dict[str, Any]:
        """The newest epoch row (plus the newest batch loss) as a dict."""
        out: dict[str, Any] = {c: v[-1] for c, v in self._epochs.items() if v}
        if self._batches[2]:
            out["Last_Batch_Loss"] = self._batches[2][-1]
        elif self.log_position:
            out["Last_Batch_Loss"] = self.log_position[4]
        return out

    # -- position -------------------------------------------------------------------------------
    def progress(self, status: str) -> Progress:
        sc = self.sidecar or {}
        total = sc.get("epochs") or (sc.get("config") or {}).get("epochs")
        if self.log_position and not total:
            total = self.log_position[1]
        done = self.epochs_done
        per = self.batches_per_epoch
        # (epoch, batches done in it): the batch CSV or the log's progress line, whichever is newer
        candidates = []
        if self._batches[0]:
            candidates.append((self._batches[0][-1], self._batches[1][-1] + 1))
        if self.log_position:
            candidates.append((self.log_position[0], self.log_position[2]))
        position = max(candidates) if candidates else None
        epoch = batch = None
        within = 0.0
        if status == "running" and position and position[0] == done + 1 and per:
            epoch, batch = position
            within = min(batch / per, 1.0)
        elif status == "running" and (not total or done < total):
            epoch, batch = done + 1, 0 if per else None
        fraction = min((done + within) / total, 1.0) if total else None
        if status == "completed":
            fraction = 1.0
        return Progress(status, done, total, epoch, batch, per, fraction,
                        self._eta(status, total, done, within, fraction))

    def _eta(self, status, total, done, within, fraction) -> float | None:
        if status != "running" or not total:
            return None
        eta = C.eta_seconds(self.epoch_values(C.EPOCH_TIME), total - done - within)
        if eta is not None:
            return eta
        start = _parse_time((self.sidecar or {}).get("start_time"))
        if start and fraction:
            return (time.time() - start) * (1 - fraction) / fraction
        return None
