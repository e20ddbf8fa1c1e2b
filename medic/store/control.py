"""A run's control files beside its sidecar, readable and writable from any host that shares the
project folder: the heartbeat and the stop request.

    metrics/run_<id>.heartbeat   epoch seconds of the last beat (text), rewritten atomically every
                                 ``MEDIC_HEARTBEAT`` seconds (default 30) while the run's processes
                                 live: by the launching process from the claim on, and by rank 0
                                 (``Heartbeat``); a beat costs about 0.2-0.5 ms (no fsync)
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
import threading
import time
from typing import Any

from medic.procs import hostname
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


def beat(project: Project, run_id: str, now: float | None = None) -> None:
    """Rank 0's heartbeat: the time, written atomically without fsync (cheap; a torn beat is
    simply unreadable and counts as none)."""
    t = time.time() if now is None else now
    write_atomic(project.heartbeat(run_id), f"{t:.3f}\n", sync=False)


class Heartbeat:
    """One run's heartbeat from this process: at most one beat per interval, whoever asks.

    ``start()`` runs a thread that beats every interval for as long as the process lives: it
    covers a run's start (torch, the rendezvous, loading the data), long validations, and a
    launcher waiting for its workers. Rank 0's training loop also calls ``beat_if_due()`` at each
    progress check (a clock read unless an interval has passed). A beat so says "the run's
    processes are alive", which is what the pid check says on the launching host.
    """

    _of: dict[tuple[str, str], "Heartbeat"] = {}

    def __init__(self, project: Project, run_id: str, interval: float | None = None):
        self.project, self.run_id = project, run_id
        self.interval = interval or heartbeat_interval()
        self.next_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def of(cls, project: Project, run_id: str) -> "Heartbeat":
        """This process's heartbeat of run ``run_id`` (one per run and process)."""
        key = (str(project.root), run_id)
        if key not in cls._of:
            cls._of[key] = cls(project, run_id)
        return cls._of[key]

    def beat_if_due(self, now: float | None = None) -> bool:
        """Beat when an interval has passed since the last beat; True when it did."""
        now = time.time() if now is None else now
        if now < self.next_at:
            return False
        with self._lock:  # the thread and the loop share the temporary file's name
            if now < self.next_at:
                return False
            self.next_at = now + self.interval
            if not self.project.sidecar(self.run_id).exists():
                return False  # the run gave its id back (or was removed): nothing to vouch for
            try:
                beat(self.project, self.run_id, now)
            except OSError:  # a full disk or a vanished folder must not end the training
                return False
        return True

    def start(self) -> "Heartbeat":
        """Beat in a daemon thread from now on (while one runs, a second call changes nothing)."""
        if self._thread is not None and self._thread.is_alive() and not self._stop.is_set():
            return self
        stop = self._stop = threading.Event()  # its own: a thread still ending keeps the old one

        def loop():
            while not stop.is_set():
                self.beat_if_due()
                stop.wait(self.interval)
        self._thread = threading.Thread(target=loop, name="medic-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


def last_beat(project: Project, run_id: str) -> float | None:
    """Epoch seconds of the run's last heartbeat, or None when it has none (yet)."""
    return read_beat(project.heartbeat(run_id))


def read_beat(path: str | os.PathLike) -> float | None:
    """The time in a heartbeat file, or None (missing, or torn)."""
    try:
        with open(path, encoding="utf-8") as f:
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
