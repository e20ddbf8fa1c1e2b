"""The run sidecar ``metrics/run_<id>.json``: config, world size, versions, status and times.

Written by rank 0 only, atomically (temporary file + ``os.replace``), so a reader sees the old
or the new version, never half of one. Readers tolerate a missing or unreadable sidecar.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STATUSES = ("running", "completed", "failed", "stopped")


def now_str(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t if t is not None else time.time()))


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar's content, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def update_sidecar(path: str | os.PathLike, **changes: Any) -> dict[str, Any]:
    data = read_sidecar(path) or {}
    data.update(changes)
    write_json_atomic(path, data)
    return data
