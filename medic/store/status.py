"""What state a run is really in: its sidecar's word, checked against the process it names.

A trainer that is SIGKILLed (or whose machine dies) cannot mark its sidecar, which then says
``running`` forever. So a ``running`` sidecar is believed only while its ``pid`` is alive and is
the process that wrote it (a pid reused by a later process does not count):

    running      the sidecar says running and its process is alive (or cannot be checked here)
    interrupted  the sidecar says running but its process is gone: killed or crashed unrecorded
    stale        the sidecar says running, names no checkable process, and no file of the run
                 has changed for a long time (an hour, or 3x its longest epoch)
    completed / failed / stopped   as the trainer recorded it
    unknown      no readable sidecar (deleted, or the CSV was written by another program)
"""

from __future__ import annotations

import socket
import time
from typing import Any

from medic.procs import pid_alive

# The one status table of a run (every reader shows these words and no others; copied into
# docs/reference/status.md):
#   starting     claimed (the sidecar exists), processes starting, no epoch yet begun
#   queued       submitted to a scheduler (SLURM), waiting for resources (``reason`` says why)
#   running      training; its processes are alive (local pid) or its heartbeat is fresh
#   completed    every epoch done (or early stopping ended it)
#   stopped      stopped on request (medic stop, Stop button, SIGINT), with a checkpoint
#   failed       ended by an error that medic recorded
#   interrupted  its processes are gone without an end record (SIGKILL, OOM, a crash, a node lost)
#   timeout      a scheduler's time limit ended it after the last allowed requeue
STATUSES = ("starting", "queued", "running", "completed", "stopped", "failed", "interrupted", "timeout")
ACTIVE = ("starting", "queued", "running")
FINISHED = ("completed", "stopped", "failed", "interrupted", "timeout")
STALE_AFTER_S = 3600.0


def same_host(sidecar: dict[str, Any]) -> bool:
    host = sidecar.get("host") or sidecar.get("hostname")
    return not host or host == socket.gethostname()


def effective_status(sidecar: dict[str, Any] | None, *, sidecar_mtime: float | None = None,
                     last_update: float | None = None, longest_epoch_s: float = 0.0,
                     now: float | None = None) -> str:
    """The status to show for a run (see the module docstring).

    ``sidecar_mtime``: when the sidecar was last written (to spot a reused pid);
    ``last_update``: the newest modification time of any of the run's files.
    """
    if sidecar is None:
        return "unknown"
    status = str(sidecar.get("status") or "unknown")
    if status != "running":
        return status
    pid = sidecar.get("pid")
    if pid not in (None, "") and same_host(sidecar):
        return "running" if pid_alive(pid, written_at=sidecar_mtime) else "interrupted"
    now = time.time() if now is None else now
    if last_update is not None and now - last_update > max(STALE_AFTER_S, 3 * longest_epoch_s):
        return "stale"
    return "running"
