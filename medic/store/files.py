"""Writing a file so that a reader sees the old or the new version, never half of one, and
showing a path the way the user typed it.

The one atomic write of medic: a temporary file in the same folder (``os.replace`` is atomic only
within one file system), flushed and fsynced, then renamed over the target; with ``durable`` the
folder is fsynced too, so the rename itself survives a power cut (checkpoints); with
``sync=False`` nothing is fsynced (a cache that checks what it reads back: still atomic)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def temp_path(path: Path) -> Path:
    """The temporary name beside ``path`` (hidden, and named by the writing process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: str | os.PathLike, data: bytes | str | Callable[[Any], None],
                 durable: bool = False, sync: bool = True) -> Path:
    """Write ``data`` (bytes, text, or a function that writes to a binary file object) to
    ``path`` atomically. Returns ``path``; on failure the target is untouched and the temporary
    file removed."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def create_exclusive(path: str | os.PathLike, data: bytes | str) -> bool:
    """Create ``path`` with ``data`` in one step, only if it does not exist yet: a temporary file
    linked to its name (``os.link`` fails when the name is taken), so no reader ever sees it
    empty or half written. False when ``path`` already exists. On a file system without hard
    links, an exclusive create and one write."""
    path = Path(path)
    tmp = temp_path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            pass
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, raw)
        finally:
            os.close(fd)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, text)


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def shown_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies below it, else as it is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def tail_lines(path: str | os.PathLike, n: int = 20) -> list[str]:
    """The last ``n`` lines of a text file (read from its end: a long log costs no more), or []
    when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 256 * max(n, 1)))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    return lines[-n:] if n > 0 else []


def new_stamped_dir(base: str | os.PathLike, prefix: str) -> Path:
    """A new folder ``base/<prefix>_<YYYYmmdd_HHMMSS>`` (``_2``, ``_3``, ... when taken), created
    exclusively, so two processes never share one."""
    import time
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for k in range(1, 1000):
        path = base / (f"{prefix}_{stamp}" if k == 1 else f"{prefix}_{stamp}_{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free {prefix}_{stamp} folder in {base}")
