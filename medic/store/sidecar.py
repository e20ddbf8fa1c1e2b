"""The run sidecar ``metrics/run_<id>.json``: config, world size, versions, status and times.

Written by rank 0 only, atomically (temporary file + ``os.replace``), so a reader sees the old
or the new version, never half of one. Readers tolerate a missing or unreadable sidecar.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from medic.store.files import write_json_atomic



def now_str(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t if t is not None else time.time()))


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar's content, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def written_at(path: str | os.PathLike) -> float | None:
    """When the sidecar was last written (epoch seconds): a pid it names is believed only for a
    process that existed by then (``medic.procs.pid_alive``)."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def mark_resumed(path: str | os.PathLike, entry: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A continued run's record: ``changes`` applied, and the resume (``entry``, with the time)
    appended to its ``resumed`` list."""
    resumed = (read_sidecar(path) or {}).get("resumed")
    resumed = resumed if isinstance(resumed, list) else []
    return update_sidecar(path, **changes, resumed=resumed + [{"time": now_str(), **entry}])


def update_sidecar(path: str | os.PathLike, **changes: Any) -> dict[str, Any]:
    data = read_sidecar(path) or {}
    data.update(changes)
    write_json_atomic(path, data)
    return data


def sweep_tags() -> dict[str, Any]:
    """The sweep and trial a run belongs to, when a sweep driver started it (else nothing)."""
    sweep, trial = os.environ.get("MEDIC_SWEEP", ""), os.environ.get("MEDIC_SWEEP_TRIAL", "")
    return {"sweep": sweep, "sweep_trial": int(trial) if trial.isdigit() else None} if sweep else {}
