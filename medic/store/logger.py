"""``MetricsLogger``: the epoch and batch CSV files of a run, usable from any training loop.

    logger = MetricsLogger(output_dir=".", log_batch_metrics=True, extra_columns=["Val_Dice"])
    for epoch in range(1, epochs + 1):
        ...
        logger.log_batch(epoch, batch_idx, loss, lr)
        logger.log_epoch(epoch, avg_loss=..., min_batch_loss=..., max_batch_loss=...,
                         learning_rate=lr, epoch_time=secs, Val_Dice=0.81)
    logger.close()

Files (docs/reference/files.md): ``metrics/epoch_metrics_<id>.csv`` with exactly the nine columns below, plus
the declared extra columns after them; ``metrics/batch_metrics_<id>.csv`` with exactly five.
A new file appears in one step with its whole header, once its columns are known (with
``extra_columns=None``, at the first epoch row); until then the run is its sidecar alone.
The header is written once; every row is one complete line written and flushed on its own, so a
reader never needs more than the newline to know a row is whole. Only rank 0 writes: on other
ranks every method is a no-op. Resuming truncates rows written after the resumed epoch (and a
partial last line) and appends from there; a file is never rewritten in place.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

from medic.errors import MedicError
from medic.store.columns import BATCH_COLUMNS, EPOCH_COLUMNS, TELEMETRY_COLUMNS  # noqa: F401 (re-exported)
from medic.store.files import create_exclusive
from medic.store.paths import Project, is_claim, reserve_run_id
from medic.store.record import RunRecord, exit_status
from medic.store.sidecar import read_sidecar

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def fmt_loss(v: float) -> str:
    v = float(v)
    return f"{v:.6f}" if math.isfinite(v) and (v == 0 or abs(v) >= 1e-4) else f"{v:.6e}" if math.isfinite(v) else str(v)


def fmt_lr(v: float) -> str:
    v = float(v)
    return f"{v:.8f}" if v == 0 or abs(v) >= 1e-6 else f"{v:.6e}"


def fmt_value(v) -> str:
    """An extra column's cell: numbers as numbers, text defused for spreadsheets."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int,)):
        return str(v)
    if isinstance(v, float):
        return fmt_loss(v)
    s = str(v).replace("\n", " ").replace(",", ";").replace('"', "'")
    try:
        float(s)
        return s
    except ValueError:
        return "'" + s if s.startswith(_FORMULA_START) else s


def _rank_from_env() -> int:
    return int(os.environ.get("RANK", "0") or 0)


_STAMP: tuple[int, str] = (-1, "")


def timestamp() -> str:
    """``time.strftime("%Y-%m-%d %H:%M:%S")`` of now, formatted once per second: batch rows can
    come thousands a second, and the same text for the same second is byte-identical."""
    global _STAMP
    now = int(time.time())
    if now != _STAMP[0]:
        _STAMP = (now, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)))
    return _STAMP[1]


def truncate_csv_after(path: Path, keep_epoch: int, partial: tuple[int, int] | None = None) -> int:
    """Cut ``path`` so it ends after the last complete row to keep: rows with
    ``Epoch <= keep_epoch`` and, with ``partial=(epoch, n)``, that epoch's rows with ``Batch < n``.

    Rows written after the checkpoint being resumed, and a partial last line, go. The header and
    every byte before the cut stay untouched. Returns the number of rows kept.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return 0
    cut = data.find(b"\n") + 1
    if cut == 0:  # a header cut short: start the file again
        os.truncate(path, 0)
        return 0
    kept = 0
    pos = cut
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break
        cells = data[pos:end].split(b",", 2)
        try:
            epoch = int(cells[0])
            keep = epoch <= keep_epoch or (partial is not None and epoch == partial[0]
                                           and int(cells[1]) < partial[1])
        except (ValueError, IndexError):
            break
        if not keep:
            break
        kept += 1
        pos = end + 1
        cut = pos
    if cut < len(data):
        os.truncate(path, cut)
    return kept


class _CsvFile:
    """One append-only CSV: header once, then one write + flush per row (or per row group)."""

    def __init__(self, path: Path, columns: Sequence[str], keep_epoch: int | None,
                 partial: tuple[int, int] | None = None):
        self.path = path
        header = ",".join(columns) + "\n"
        # a new file appears in one step with its whole header: no reader ever sees it empty
        created = create_exclusive(path, header)
        if not created and path.stat().st_size > 0:
            with open(path, "rb") as f:
                first = f.readline().decode("utf-8-sig", errors="replace")
            if first.endswith("\n") and first != header:
                raise MedicError(f"{path} has columns {first.strip()!r}, expected {header.strip()!r}; "
                                 "refusing to append to a file of another layout")
            if keep_epoch is not None:
                truncate_csv_after(path, keep_epoch, partial)
            elif not first.endswith("\n"):
                os.truncate(path, 0)
        # unbuffered binary append: each row is exactly one write() syscall, nothing held back
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if os.fstat(self._fd).st_size == 0:
            os.write(self._fd, header.encode())

    def write(self, text: str) -> None:
        os.write(self._fd, text.encode())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def improves(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` (``mode`` min or max) by more than ``min_delta``; a
    non-finite value never does, and anything finite beats no best yet."""
    if not math.isfinite(value):
        return False
    if best is None or not math.isfinite(best):
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class MetricsLogger:
    """Writes a run's epoch CSV (and optionally its batch CSV and sidecar); rank 0 only.

    Every other rank gets a logger whose methods do nothing, so the same loop runs on all ranks.
    The run's status in its sidecar is ``running`` until ``close()`` (``completed``) or until an
    exception leaves the ``with`` block (``failed``, with its message).

    Args:
        output_dir: the project root; the files go to ``<output_dir>/metrics/``. Default: the
            working directory.
        run_id: an existing run id to continue, or ``None`` for a new one, reserved so that two
            runs started in the same second get distinct ids.
        log_batch_metrics: also write the batch CSV (one row per ``log_batch`` call).
        extra_columns: names of metrics written after the nine epoch columns (e.g.
            ``["Val_Loss", "Val_Dice"]``); ``None``: those of the first ``log_epoch`` call.
        monitor_mode: ``"min"`` or ``"max"``: which way the logger tracks the best value when
            ``log_epoch`` is not told it.
        resume_epoch: when continuing a run, the last epoch whose rows are kept; later rows go.
        resume_partial: ``(epoch, n)`` also keeps the first ``n`` batch rows of an epoch that was
            stopped part-way.
        best_so_far: the best value before the first logged epoch (when continuing a run).
        rank: this process's rank; default from ``RANK`` (0 without one).
        hparams: the run's options (any dict), stored in the sidecar as its ``config``.
        epochs_planned: the planned epochs, for progress and ETA in the readers.
        resume: a run id whose files to continue (with ``resume_epoch``: the rows after it go).
        sidecar: ``False``: write no sidecar (``medic train`` writes its own). Default: write one
            unless the run already has a sidecar that another writer keeps.
        run_info: further sidecar keys (e.g. ``{"source": "Lightning"}``).

    Raises:
        MedicError: ``monitor_mode`` is neither ``"min"`` nor ``"max"``, an extra column is
            invalid, or the run to resume does not exist.

    Example::

        from medic import MetricsLogger

        with MetricsLogger(".", log_batch_metrics=True, hparams={"lr": 0.01}, epochs_planned=2) as log:
            for epoch in (1, 2):
                losses = [0.9 / epoch, 0.7 / epoch]
                for i, loss in enumerate(losses):
                    log.log_batch(epoch, i, loss, 0.01)
                log.log_epoch(epoch, avg_loss=sum(losses) / 2, min_batch_loss=min(losses),
                              max_batch_loss=max(losses), learning_rate=0.01, epoch_time=1.0)
        print(log.run_id)   # metrics/epoch_metrics_<run_id>.csv
    """

    def __init__(self, output_dir: str | os.PathLike | None = None, run_id: str | None = None, *,
                 log_batch_metrics: bool = False, extra_columns: Iterable[str] = (),
                 monitor_mode: str = "min", resume_epoch: int | None = None,
                 resume_partial: tuple[int, int] | None = None, best_so_far: float | None = None, rank: int | None = None,
                 hparams: dict | None = None, epochs_planned: int | None = None, resume: str | None = None,
                 sidecar: bool | None = None, run_info: dict | None = None):
        self.project = Project.at(output_dir)
        self.enabled = (rank if rank is not None else _rank_from_env()) == 0
        self.extra_columns = None if extra_columns is None else check_extra_columns(extra_columns)
        if resume is not None:
            run_id = str(resume)
            if self.enabled and not self.project.epoch_csv(run_id).is_file():
                raise MedicError(f"no run {run_id} to resume in {self.project.metrics}")
        if monitor_mode not in ("min", "max"):
            raise MedicError(f"monitor_mode must be 'min' or 'max', got {monitor_mode!r}")
        self.monitor_mode = monitor_mode
        self.best = best_so_far
        self.best_epoch: int | None = None
        self.run_id = run_id
        self.epoch_path: Path | None = None
        self.batch_path: Path | None = None
        self._epoch = self._batch = None
        self.record: RunRecord | None = None
        if not self.enabled:
            return
        self.project.metrics.mkdir(parents=True, exist_ok=True)
        continuing = self.run_id is not None and self.project.epoch_csv(self.run_id).exists()
        # an id claimed here for a logger told to keep no sidecar: the claim goes once a CSV holds the id
        self._drop_claim = self.run_id is None and sidecar is False
        if self.run_id is None:
            self.run_id = reserve_run_id(self.project)
        self.epoch_path = self.project.epoch_csv(self.run_id)
        self._resume_epoch = resume_epoch
        if self.extra_columns is None and continuing and self.epoch_path.stat().st_size > 0:  # its columns
            with open(self.epoch_path, encoding="utf-8-sig", errors="replace") as f:
                header = f.readline()
            if header.endswith("\n"):
                self.extra_columns = tuple(header.strip().split(",")[len(EPOCH_COLUMNS):])
        if self.extra_columns is not None:
            self._open_epoch_csv()
            if continuing and self.best is None:
                self.best = last_best(self.epoch_path)
        if log_batch_metrics:
            self.batch_path = self.project.batch_csv(self.run_id)
            self._batch = _CsvFile(self.batch_path, BATCH_COLUMNS, resume_epoch, resume_partial)
        if sidecar or sidecar is None and RunRecord.ours_to_write(self.project.sidecar(self.run_id)):
            self.record = RunRecord(self.project.sidecar(self.run_id), self.run_id)
            self.record.start(hparams=hparams, epochs_planned=epochs_planned, extra_columns=self.extra_columns,
                              log_batch_metrics=log_batch_metrics, monitor_mode=monitor_mode,
                              resumed_from=resume_epoch if continuing else None, info=run_info)

    def _open_epoch_csv(self) -> None:
        self._epoch = _CsvFile(self.epoch_path, EPOCH_COLUMNS + self.extra_columns, self._resume_epoch)
        if self._drop_claim and is_claim(read_sidecar(self.project.sidecar(self.run_id))):
            self.project.sidecar(self.run_id).unlink(missing_ok=True)
        self._drop_claim = False

    def is_better(self, value: float) -> bool:
        return improves(value, self.best, self.monitor_mode)

    def log_epoch(self, epoch: int, *, avg_loss: float, min_batch_loss: float, max_batch_loss: float,
                  learning_rate: float, epoch_time: float, best_so_far: float | None = None,
                  is_best: bool | None = None, **extra) -> None:
        """Append one epoch row. Without ``best_so_far``/``is_best`` the logger tracks the best
        ``avg_loss`` itself (``monitor_mode``)."""
        if self.extra_columns is None:  # the first row names the columns
            self.extra_columns = check_extra_columns(extra)
            if self.enabled:
                self._open_epoch_csv()
                if self.record is not None:
                    self.record.update(extra_columns=list(self.extra_columns))
        unknown = set(extra) - set(self.extra_columns)
        if unknown:
            raise MedicError(f"unknown metric column(s) {sorted(unknown)}; declare them in extra_columns")
        if is_best is None:
            is_best = self.is_better(avg_loss)
            if is_best:
                self.best = float(avg_loss)
            best_so_far = self.best if self.best is not None else float("nan")
        elif best_so_far is None:
            raise MedicError("log_epoch: give best_so_far together with is_best")
        else:
            self.best = best_so_far
        if is_best:
            self.best_epoch = int(epoch)
        if not self.enabled:
            return
        cells = [str(int(epoch)), fmt_loss(avg_loss), fmt_loss(min_batch_loss), fmt_loss(max_batch_loss),
                 fmt_lr(learning_rate), f"{float(epoch_time):.2f}", fmt_loss(best_so_far),
                 "True" if is_best else "False", time.strftime("%Y-%m-%d %H:%M:%S")]
        cells += [fmt_value(extra.get(name)) for name in self.extra_columns]
        self._epoch.write(",".join(cells) + "\n")
        if self.record is not None:
            self.record.update(epochs_done=int(epoch), best=self.best, best_epoch=self.best_epoch,
                               updated=time.strftime("%Y-%m-%d %H:%M:%S"))

    def log_batch(self, epoch: int, batch: int, loss: float, learning_rate: float) -> None:
        if self._batch is not None:
            self._batch.write(f"{int(epoch)},{int(batch)},{fmt_loss(loss)},{fmt_lr(learning_rate)},"
                              f"{timestamp()}\n")

    def log_batches(self, epoch: int, first_batch: int, losses: Sequence[float],
                    learning_rates: Sequence[float]) -> None:
        """Append consecutive batch rows (complete lines) in one write."""
        if self._batch is None or not len(losses):
            return
        stamp = timestamp()
        e = int(epoch)
        self._batch.write("".join(
            f"{e},{first_batch + i},{fmt_loss(loss)},{fmt_lr(lr)},{stamp}\n"
            for i, (loss, lr) in enumerate(zip(losses, learning_rates))))

    @property
    def logs_batches(self) -> bool:
        return self._batch is not None

    def close(self, status: str = "completed", message: str = "") -> None:
        """Close the files and record the run's end in its sidecar (``completed`` unless told
        ``failed`` or ``stopped``, with a ``message``)."""
        for f in (self._epoch, self._batch):
            if f is not None:
                f.close()
        if self.record is not None:
            self.record.finish(status, message)

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(*exit_status(exc_type, exc))


def check_extra_columns(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(names)
    if set(names) & set(EPOCH_COLUMNS) or len(set(names)) != len(names):
        raise MedicError(f"extra columns must be new and distinct names, got {list(names)}")
    return names


def last_best(path: Path) -> float | None:
    """``Best_Loss_So_Far`` of the last complete row of an epoch CSV (a run being continued)."""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
        lines = f.read().split(b"\n")[:-1]
    try:
        value = float(lines[-1].split(b",")[6]) if len(lines) > 1 else None
    except (ValueError, IndexError):
        return None
    return value if value is not None and math.isfinite(value) else None
