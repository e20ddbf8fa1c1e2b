"""Process facts, read from /proc (Linux; psutil where /proc is absent): whether a process is
alive and still the one we mean, when it started, what it started, and signalling it.

A pid alone does not name a process for long: the number is reused once the process is gone.
So ``pid_alive`` can also check that the live process is the one recorded, by its start time in
clock ticks (``start_ticks``, exact) or by when a record naming it was written (``written_at``:
a process started after that only reuses the number). A zombie counts as gone: a killed run's
workers may never be reaped (in a container whose first process reaps nothing), and their run
must still be resumable.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def hostname() -> str:
    """This host's name as medic records it (``MEDIC_HOSTNAME`` overrides it, for tests)."""
    return os.environ.get("MEDIC_HOSTNAME") or socket.gethostname()


def pid_scope() -> str:
    """Where a pid means this process table: the kernel's boot id and the pid namespace. Two
    machines (or containers) may share a host name; a pid recorded under another scope cannot be
    checked here."""
    parts = []
    for path, read in (("/proc/sys/kernel/random/boot_id", lambda p: open(p).read().strip()),
                       ("/proc/self/ns/pid", os.readlink)):
        try:
            parts.append(read(path))
        except OSError:
            parts.append("")
    return "/".join(parts)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ')'
    return data[data.rfind(")") + 2:].split()


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; with the pid it names one process."""
    fields = _stat_fields(pid)
    if fields is not None:
        return int(fields[19])
    try:
        import psutil
        return int(psutil.Process(pid).create_time() * 100)
    except Exception:
        return None


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds); None where that is unknown."""
    ticks = process_start_ticks(pid)
    if ticks is None:
        return None
    try:
        with open("/proc/stat", encoding="ascii") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] in ("Z", "X")


def pid_alive(pid: Any, *, start_ticks: int | None = None, written_at: float | None = None) -> bool:
    """Whether ``pid`` is a live process (not a zombie) and, given ``start_ticks``, the very
    process that started then, or, given ``written_at`` (epoch seconds), one that already
    existed when a record naming it was written."""
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
    if is_zombie(pid):
        return False
    if start_ticks is not None and process_start_ticks(pid) != start_ticks:
        return False
    if written_at is not None:
        started = process_start_time(pid)
        if started is not None and started > written_at + 2.0:
            return False
    return True


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (torchrun's workers, say); [] where unknown."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        try:
            import psutil
            return [p.pid for p in psutil.Process(pid).children()]
        except Exception:
            return []
    kids: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: scan every ppid
            return [p for p in _all_pids() if (_stat_fields(p) or [None, "0"])[1] == str(pid)]
        except OSError:
            continue
    return kids


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun workers, their data-loader workers), nearest first."""
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children(queue.pop(0)):
            if child not in found:
                found.append(child)
                queue.append(child)
    return found


def send_signal(pid: int, sig: int, group: bool = False) -> None:
    """Signal ``pid`` (its whole process group when ``group`` and it leads one); a process that
    is already gone is no error."""
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
