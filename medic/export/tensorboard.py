"""Export a run to TensorBoard: ``DIR/<run id>/`` holds one event file and ``medic_export.json``.

    epoch/<column>     one scalar per epoch column, step = epoch (per-class columns included)
    batch/Loss, batch/Learning_Rate   from the batch CSV, step = global batch index
    HParams            the run's options, one session per run, its metric the best value of the
                       monitored metric (``epoch/Best_Loss_So_Far``)

Written with the ``tensorboard`` package's record writer (no torch, no TensorFlow). The state file
records what the event file holds: its size, and the count and digest of the rows written. A new
export appends only the rows that are new; when the run's earlier rows or options changed (a resume
that cut rows and trained them again, or changed ``--epochs``), the folder gets a new event file
with everything and the old one is removed. Bytes past the recorded size (an export killed while
writing) are cut off first, so a step is never written twice.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.record_writer import RecordWriter

from medic.export.source import RunSource, number, parse_time, prepare_dir
from medic.store import columns as C
from medic.store.files import write_json_atomic

STATE_NAME = "medic_export.json"
BEST_TAG = f"epoch/{C.BEST_SO_FAR}"
# epoch columns that are not metrics
SKIPPED = (C.EPOCH, C.TIMESTAMP)


class TensorBoardTarget:
    """The TensorBoard export of the runs into one log folder."""

    label = "TensorBoard"

    def __init__(self, logdir: str | os.PathLike):
        self.logdir = prepare_dir(logdir, "TensorBoard")

    def sync(self, source: RunSource) -> str:
        folder = self.logdir / source.run_id
        folder.mkdir(exist_ok=True)
        state = _read_state(folder / STATE_NAME)
        state = _repair(folder, state)
        hparams = source.options()
        epochs, batches = source.epochs, source.batches
        if state and state["hparams"] == hparams and epochs.kept(state["epochs"], state["epoch_digest"]) \
                and batches.kept(state["batches"], state["batch_digest"]):
            start_e, start_b, path = state["epochs"], state["batches"], folder / state["file"]
            what, append = "appended", True
        else:
            start_e = start_b = 0
            path = folder / f"events.out.tfevents.{time.time():010.0f}.{socket.gethostname()}.medic"
            what = "written" if not state else "replaced (the run's earlier rows or options changed)"
            append = False
        new_e, new_b = len(epochs.rows) - start_e, len(batches.rows) - start_b
        if append and not new_e and not new_b:
            return f"{source.run_id}: up to date ({len(epochs.rows)} epochs)"
        with open(path, "ab") as f:
            writer = RecordWriter(f)
            if not append:
                _write_head(writer, source, hparams)
            for event in _epoch_events(source, start_e):
                writer.write(event.SerializeToString())
            for event in _batch_events(source, start_b):
                writer.write(event.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        write_json_atomic(folder / STATE_NAME, {
            "run_id": source.run_id, "file": path.name, "size": size,
            "epochs": len(epochs.rows), "epoch_digest": epochs.digests[-1],
            "batches": len(batches.rows), "batch_digest": batches.digests[-1],
            "hparams": hparams, "exported": time.strftime("%Y-%m-%d %H:%M:%S")})
        if state and path.name != state["file"]:
            (folder / state["file"]).unlink(missing_ok=True)
        shown = f"{source.run_id}: {new_e} epoch rows"
        if batches.rows:
            shown += f", {new_b} batch rows"
        return f"{shown} {what} ({len(epochs.rows)} epochs in all) -> {folder}"

    def finish(self, source: RunSource) -> None:
        """Nothing beyond the rows: the event file is complete after every ``sync``."""


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        keys = ("file", "size", "epochs", "epoch_digest", "batches", "batch_digest", "hparams")
        return state if all(k in state for k in keys) else None
    except (OSError, ValueError):
        return None


def _repair(folder: Path, state: dict[str, Any] | None) -> dict[str, Any] | None:
    """Remove event files the state does not know (an export killed before it recorded them) and
    cut the known one back to the recorded size. Returns the state still valid, or None."""
    known = state["file"] if state else None
    for path in folder.glob("events.out.tfevents.*"):
        if path.name != known:
            path.unlink()
    if not state:
        return None
    path = folder / known
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if size < state["size"]:
        return None
    if size > state["size"]:
        os.truncate(path, state["size"])
    return state


def _event(step: int, wall_time: float | None, **fields) -> event_pb2.Event:
    return event_pb2.Event(step=step, wall_time=wall_time or time.time(), **fields)


def _scalars(values: dict[str, float]) -> summary_pb2.Summary:
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v)
                                      for t, v in values.items()])


def _write_head(writer: RecordWriter, source: RunSource, hparams: dict[str, Any]) -> None:
    """The file version, a session start (a TensorBoard that loaded an older file of this run
    drops what it had from step 0 on), and the HParams: experiment and session of this run."""
    start = source.start_time()
    writer.write(_event(0, start, file_version="brain.Event:2").SerializeToString())
    writer.write(_event(0, start, session_log=event_pb2.SessionLog(
        status=event_pb2.SessionLog.START)).SerializeToString())
    metric = hp.Metric(BEST_TAG, display_name=f"best {source.monitor}",
                       description=f"best value of {source.monitor} so far")
    config = hp.hparams_config_pb([hp.HParam(name) for name in sorted(hparams)], [metric],
                                  time_created_secs=start)
    session = hp.hparams_pb(hparams, trial_id=source.run_id, start_time_secs=start)
    for summary in (config, session):
        writer.write(_event(0, start, summary=summary).SerializeToString())


def _epoch_events(source: RunSource, start: int):
    for row in source.epochs.dicts(start):
        step = number(row.get(C.EPOCH))
        if step is None:
            continue
        values = {f"epoch/{k}": v for k, v in ((k, number(c)) for k, c in row.items())
                  if k not in SKIPPED and v is not None}
        yield _event(int(step), parse_time(row.get(C.TIMESTAMP, "")), summary=_scalars(values))


def _batch_events(source: RunSource, start: int):
    for row, step in zip(source.batches.dicts(start), source.batch_steps(start)):
        values = {f"batch/{k}": v for k, v in ((k, number(row.get(k))) for k in (C.LOSS, C.LEARNING_RATE))
                  if v is not None}
        yield _event(step, parse_time(row.get(C.TIMESTAMP, "")), summary=_scalars(values))
