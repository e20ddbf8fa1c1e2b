"""A run's control files beside its sidecar, readable and writable from any host that shares the
project folder: the heartbeat and the stop request.

    metrics/run_<id>.heartbeat   epoch seconds of rank 0's last beat (text), rewritten atomically
                                 every ``MEDIC_HEARTBEAT`` seconds (default 30) while the run trains
    metrics/run_<id>.stop        a stop request (JSON): ``action`` is ``stop`` (save a checkpoint,
                                 mark the run stopped) or ``requeue`` (save a checkpoint, leave the
                                 run to be continued by the scheduler: SLURM's time limit or
                                 preemption); with who asked and when

Signals stay the fast path where the trainer's pid is local; the files work everywhere. The
trainer removes the stop request once it has acted on it, so a resumed run does not stop at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from medic.store.files import write_atomic, write_json_atomic
from medic.store.paths import Project

HEARTBEAT_ENV = "MEDIC_HEARTBEAT"
DEFAULT_HEARTBEAT_S = 30.0
# a run whose heartbeat is older than this many intervals, and whose processes cannot be seen, is
# interrupted
MISSED_BEATS = 3
STOP_ACTIONS = ("stop", "requeue")


def heartbeat_interval() -> float:
    """Seconds between heartbeats (``MEDIC_HEARTBEAT``; default 30)."""
    try:
        value = float(os.environ.get(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S))
    except ValueError:
        return DEFAULT_HEARTBEAT_S
    return value if value > 0 else DEFAULT_HEARTBEAT_S


def hostname() -> str:
    """This host's name as medic records it (``MEDIC_HOSTNAME`` overrides it, for tests)."""
    return os.environ.get("MEDIC_HOSTNAME") or socket.gethostname()


def beat(project: Project, run_id: str, now: float | None = None) -> None:
    """Rank 0's heartbeat: the time, written atomically without fsync (cheap; a torn beat is
    simply unreadable and counts as none)."""
    t = time.time() if now is None else now
    write_atomic(project.heartbeat(run_id), f"{t:.3f}\n", sync=False)


def last_beat(project: Project, run_id: str) -> float | None:
    """Epoch seconds of the run's last heartbeat, or None when it has none (yet)."""
    try:
        with open(project.heartbeat(run_id), encoding="utf-8") as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return None


def beat_is_fresh(beat_at: float | None, now: float | None = None,
                  interval: float | None = None) -> bool:
    """Whether a heartbeat taken at ``beat_at`` still vouches for a live run."""
    if beat_at is None:
        return False
    now = time.time() if now is None else now
    return now - beat_at <= MISSED_BEATS * (interval or heartbeat_interval())


def request_stop(project: Project, run_id: str, action: str = "stop", reason: str = "") -> dict[str, Any]:
    """Ask the run to stop (``action="stop"``) or to checkpoint for a requeue (``"requeue"``)."""
    if action not in STOP_ACTIONS:
        raise ValueError(f"action must be one of {STOP_ACTIONS}, not {action!r}")
    request = {"action": action, "reason": reason, "host": hostname(), "pid": os.getpid(),
               "time": time.time()}
    write_json_atomic(project.stop_request(run_id), request)
    return request


def read_stop_request(project: Project, run_id: str) -> dict[str, Any] | None:
    """The pending stop request, or None."""
    try:
        with open(project.stop_request(run_id), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("action") not in STOP_ACTIONS:
        return None
    return data


def clear_stop_request(project: Project, run_id: str) -> None:
    try:
        os.unlink(project.stop_request(run_id))
    except FileNotFoundError:
        pass
