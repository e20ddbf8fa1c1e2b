"""The sidecar of a run recorded by ``MetricsLogger`` in someone else's training loop (a plain
loop, Lightning, MONAI/Ignite): the same file, with the same keys, as ``medic train`` writes.

    running      written when the logger opens, over the claim that reserved the id (pid,
                 host, start time, options, planned epochs)
    progress     ``epochs_done``, ``best`` and ``best_epoch`` after every epoch row
    completed    on leaving the ``with`` block normally (or ``close()``)
    failed       on an exception, with its message; ``stopped`` on Ctrl-C

A process killed outright cannot write anything: its sidecar keeps ``running`` with a pid that is
gone, which readers show as ``interrupted`` (``medic.store.status``). While the run is open, a
thread beats its heartbeat, so that other hosts see it alive between rows. Rank 0 only; every
write is atomic (``write_json_atomic``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from medic.store import columns as C
from medic.procs import hostname, pid_scope
from medic.store.control import Heartbeat, heartbeat_interval
from medic.store.files import write_json_atomic
from medic.store.paths import Project, is_claim
from medic.store.sidecar import mark_resumed, now_str, read_sidecar, update_sidecar


def plain(value: Any) -> Any:
    """``value`` as JSON data: numbers, text, booleans and None as they are, mappings and
    sequences item by item, anything else (a tensor, a class, a path) as its text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    item = getattr(value, "item", None)  # a 0-d tensor or a numpy scalar
    if callable(item) and getattr(value, "ndim", None) == 0:
        try:
            return plain(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def world_size_from_env() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


class RunRecord:
    """Writes and updates ``metrics/run_<id>.json`` for one ``MetricsLogger``."""

    def __init__(self, path: Path, run_id: str):
        self.path = Path(path)
        self.run_id = run_id
        self.finished = False
        self.heartbeat: Heartbeat | None = None

    @staticmethod
    def ours_to_write(path: Path) -> bool:
        """True unless ``path`` is a sidecar kept by another writer (``medic train``'s, or a
        tool's: one without ``source``)."""
        existing = read_sidecar(path)
        return existing is None or "source" in existing or is_claim(existing)

    def start(self, *, hparams: Mapping[str, Any] | None, epochs_planned: int | None,
              extra_columns, log_batch_metrics: bool, monitor_mode: str, resumed_from: int | None,
              info: Mapping[str, Any] | None) -> None:
        """A new record, or, when the run continues (``resumed_from`` set and a record exists),
        the old record marked running again with the resume noted."""
        old = read_sidecar(self.path) if resumed_from is not None or self.path.exists() else None
        claim = old if is_claim(old) else {}
        old = None if claim else old
        fields: dict[str, Any] = {"status": "running", "end_time": None, "message": "", "pid": os.getpid(),
                                  "host": hostname(), "pid_scope": pid_scope(), "heartbeat_s": heartbeat_interval()}
        if epochs_planned is not None:
            fields["epochs"] = int(epochs_planned)
        if hparams is not None:
            fields["config"] = plain(dict(hparams))
        fields.update(plain(dict(info or {})))
        self.heartbeat = Heartbeat.of(Project(self.path.parent.parent), self.run_id)
        if old is not None:
            mark_resumed(self.path, {"from_epoch": resumed_from}, **fields)
            self.heartbeat.start()
            return
        from medic import __version__
        record = {"run_id": self.run_id, "status": "running", "start_time": claim.get("start_time") or now_str(),
                  "start_epoch": claim.get("start_epoch") or round(time.time(), 3), "end_time": None,
                  "epochs": None, "epochs_done": 0, "batches_per_epoch": None,
                  "world_size": world_size_from_env(), "monitor": C.AVG_LOSS, "monitor_mode": monitor_mode,
                  "extra_columns": list(extra_columns) if extra_columns is not None else None,
                  "log_batch_metrics": bool(log_batch_metrics), "best": None, "best_epoch": None,
                  "source": "MetricsLogger", "config": {},
                  "versions": {"medic": __version__, "python": sys.version.split()[0]}}
        record.update(fields)
        write_json_atomic(self.path, record)
        self.heartbeat.start()

    def update(self, **fields: Any) -> None:
        if not self.finished:
            update_sidecar(self.path, **plain(fields))

    def finish(self, status: str, message: str = "") -> None:
        """The final status (once: later calls change nothing)."""
        if self.finished:
            return
        if self.heartbeat is not None:
            self.heartbeat.stop()
        update_sidecar(self.path, status=status, end_time=now_str(), message=message[:500])
        self.finished = True


def exit_status(exc_type, exc) -> tuple[str, str]:
    """The status and message for leaving a ``with`` block with this exception (or none)."""
    if exc_type is None:
        return "completed", ""
    if issubclass(exc_type, KeyboardInterrupt):
        return "stopped", "interrupted"
    if issubclass(exc_type, SystemExit) and exc is not None and exc.code in (0, None):
        return "completed", ""
    text = str(exc).splitlines()[0][:300] if exc is not None and str(exc) else ""
    return "failed", f"{exc_type.__name__}: {text}" if text else exc_type.__name__
