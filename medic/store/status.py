"""What state a run is really in: the one status table, and its sidecar's word checked against
the processes and the heartbeat it names. Every reader (``medic runs``, ``medic watch``, the live
monitor, ``medic stop``, the sweep driver, the integrations, export, ``medic clean``) shows these
words and no others.

    ===========  ==========================================================================
    status       meaning
    ===========  ==========================================================================
    starting     the run id is claimed (its sidecar exists); its processes are starting
                 (torch, the rendezvous, the data) and no epoch has begun
    queued       submitted to a scheduler (SLURM), waiting for resources (``reason`` says why)
    running      training: its processes are alive (checked by pid on the launching host) or,
                 seen from anywhere else, its heartbeat is fresh
    completed    every epoch done (or early stopping ended it)
    stopped      stopped on request (``medic stop``, a Stop button, Ctrl-C, SIGTERM), with a
                 checkpoint to resume from
    failed       ended by an error that medic recorded (the sidecar's ``message`` says which)
    interrupted  its processes are gone without an end record: SIGKILL, out of memory, a crash,
                 a lost node. Resumable from its last checkpoint, if it has one
    timeout      a scheduler's time limit ended it after its last allowed requeue
    ===========  ==========================================================================

How a run that says it is active (``starting``/``running``) is checked:

- on the launching host (same host name *and* the same process table: ``medic.procs.pid_scope``)
  by the pid it records, which must be alive and be the process that wrote it (a reused pid does
  not count): alive means the sidecar's word, gone means ``interrupted``, at once;
- anywhere else, including another machine or container with the same host name, by its
  heartbeat (``metrics/run_<id>.heartbeat``, rank 0 every ``MEDIC_HEARTBEAT`` seconds, default
  30; ``medic.store.control``) and the newest change to its files: older than 3 intervals means
  ``interrupted``.

A run can therefore never read ``running`` once its processes are gone, and no other word (no
``unknown``, no ``stale``) is ever shown. A CSV without a sidecar (written by another program)
reads ``running`` while it changes and ``interrupted`` after. ``queued`` is the scheduler's word.
A SLURM run (``launcher: slurm``) is checked by its job's state in ``squeue`` instead
(``slurm_status``), with the heartbeat where ``squeue`` cannot be asked.
"""

from __future__ import annotations

import os
import time
from typing import Any

from medic import squeue
from medic.procs import hostname, pid_alive, pid_scope
from medic.store.control import MISSED_BEATS, heartbeat_interval, last_beat
from medic.store.paths import Project
from medic.store.sidecar import read_sidecar, written_at

# the table in the module docstring (docs/reference/status.md shows it too)
STATUSES = ("starting", "queued", "running", "completed", "stopped", "failed", "interrupted", "timeout")
ACTIVE = ("starting", "queued", "running")
FINISHED = ("completed", "stopped", "failed", "interrupted", "timeout")


def is_local(sidecar: dict[str, Any]) -> bool:
    """Whether the pid the sidecar records can be checked here: the same host name and, where it
    was recorded, the same process table (not another machine or container with that name)."""
    host = sidecar.get("host") or sidecar.get("hostname")
    if host and host != hostname():
        return False
    scope = sidecar.get("pid_scope")
    return not scope or scope == pid_scope()


def effective_status(sidecar: dict[str, Any] | None, *, sidecar_mtime: float | None = None,
                     last_beat: float | None = None, last_update: float | None = None,
                     now: float | None = None, interval: float | None = None, **_ignored: Any) -> str:
    """The status to show for a run: one of ``STATUSES`` (see the module docstring).

    Args:
        sidecar: the run's sidecar, or None when it has none.
        sidecar_mtime: when the sidecar was last written (a pid is believed only for a process
            that existed by then).
        last_beat: epoch seconds of the run's last heartbeat, if any.
        last_update: the newest modification time of the run's files (a sign of life too).
        now: the time to judge at (default: now).
        interval: the heartbeat interval (default: the run's recorded ``heartbeat_s``, else
            ``MEDIC_HEARTBEAT``).
    """
    now = time.time() if now is None else now
    interval = interval or (sidecar or {}).get("heartbeat_s") or heartbeat_interval()
    signs = [t for t in (last_beat, last_update, sidecar_mtime) if isinstance(t, (int, float))]
    fresh = bool(signs) and now - max(signs) <= MISSED_BEATS * float(interval)
    if sidecar is None:
        return "running" if fresh else "interrupted"
    status = sidecar.get("status")
    if status in FINISHED:
        return status
    if sidecar.get("launcher") == "slurm":
        return slurm_status(sidecar, status if status in ACTIVE else "running", fresh)
    if status == "queued":
        return status
    status = status if status in ACTIVE else "running"  # a word of an older version: check it
    pid = sidecar.get("pid")
    if pid not in (None, "") and is_local(sidecar):
        return status if pid_alive(pid, written_at=sidecar_mtime) else "interrupted"
    return status if fresh else "interrupted"


def run_status(project: Project, run_id: str, sidecar: dict[str, Any] | None = None,
               last_update: float | None = None) -> str:
    """``effective_status`` of run ``run_id``, with everything it needs read from the files
    (``sidecar`` when already read; ``last_update`` default: the newest of its CSVs and sidecar)."""
    path = project.sidecar(run_id)
    if sidecar is None:
        sidecar = read_sidecar(path)
    if last_update is None:
        times = []
        for p in (project.epoch_csv(run_id), project.batch_csv(run_id), path):
            try:
                times.append(os.stat(p).st_mtime)
            except OSError:
                pass
        last_update = max(times, default=None)
    return effective_status(sidecar, sidecar_mtime=written_at(path), last_beat=last_beat(project, run_id),
                            last_update=last_update)


def slurm_status(sidecar: dict[str, Any], status: str, fresh: bool) -> str:
    """An active SLURM run's status, from its job's state in ``squeue`` (one call per listing,
    cached), not from a pid or a host name, which belong to a compute node. Without ``squeue`` (a
    machine outside the cluster that reads the shared files), the heartbeat (``fresh``) decides
    whether a starting or running run is alive."""
    info = sidecar.get("slurm") if isinstance(sidecar.get("slurm"), dict) else {}
    listing = squeue.jobs()
    if listing is None or not info.get("job_id"):
        return status if status == "queued" or fresh else "interrupted"
    state = listing.get(str(info["job_id"]))
    if state is not None and state.waiting:
        return "queued"  # waiting, for the first time or after a requeue
    if state is not None and state.alive:
        return status
    # the job ended and nothing recorded how: cancelled or killed through SLURM (scancel; the
    # training may have saved a checkpoint on the SIGTERM that comes first), a node lost
    return "interrupted"


def waiting_reason(sidecar: dict[str, Any] | None) -> str:
    """Why a SLURM run's job waits (``Priority``, ``Resources``, ``BeginTime``), from ``squeue``
    (one cached call for every run); empty when it does not wait, or when nothing says."""
    info = (sidecar or {}).get("slurm")
    if not isinstance(info, dict) or not info.get("job_id"):
        return ""
    state = squeue.job(info["job_id"])
    return state.reason if state is not None and state.waiting and state.reason not in ("", "None") else ""


def shown_status(status: str, sidecar: dict[str, Any] | None) -> str:
    """``status`` as a person reads it: a queued SLURM run says why its job waits
    (``queued (Priority)``); every other status as it is."""
    reason = waiting_reason(sidecar) if status == "queued" else ""
    return f"{status} ({reason})" if reason else status
