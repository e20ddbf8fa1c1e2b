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

import os
import socket
import time
from typing import Any

FINISHED = ("completed", "failed", "stopped", "interrupted")
STALE_AFTER_S = 3600.0


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from /proc; None where that is unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat", encoding="ascii") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def pid_alive(pid: Any, written_at: float | None = None) -> bool:
    """Whether ``pid`` is a live process that existed when the sidecar was written
    (``written_at``, epoch seconds): a process started later only reuses the number."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    except OSError:
        return False
    if _is_zombie(pid):
        return False
    if written_at is not None:
        started = _process_start(pid)
        if started is not None and started > written_at + 2.0:
            return False
    return True


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
        return "running" if pid_alive(pid, sidecar_mtime) else "interrupted"
    now = time.time() if now is None else now
    if last_update is not None and now - last_update > max(STALE_AFTER_S, 3 * longest_epoch_s):
        return "stale"
    return "running"
