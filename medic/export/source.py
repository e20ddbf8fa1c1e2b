"""A run as the exporters see it: its epoch and batch rows, its options and whether it has ended.

Rows are read with the tail reader of ``medic watch`` (``medic.store.tail.CsvTail``), so following a
live run costs the new bytes only. Every prefix of the rows has a digest: an exporter stores the
number of rows it wrote and their digest, and on the next export appends only when the run's first
rows are still those (a resume that cut rows and wrote them again changes the digest, and the
exporter replaces what it wrote instead).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from medic.errors import MedicError
from medic.store import columns as C
from medic.store.paths import Project
from medic.store.sidecar import read_sidecar
from medic.store.status import run_status
from medic.store.tail import CsvTail

# options that say nothing about the training (a resume sets ``resume`` every time)
NOT_OPTIONS = ("resume",)
# bytes before the end of the rows read, compared at each poll to spot a file rewritten in place
_FINGERPRINT = 256


class Rows:
    """The complete rows of one CSV so far, with the digest of every prefix (``digests[n]`` is the
    digest of the first ``n`` rows)."""

    def __init__(self, path: Path):
        self.path = path
        self._start()

    def _start(self) -> None:
        self.tail = CsvTail(self.path)
        self.rows: list[list[str]] = []
        self._hash = hashlib.sha256()
        self.digests = [self._hash.hexdigest()]
        self._end, self._print = 0, b""

    @property
    def header(self) -> list[str]:
        return self.tail.header or []

    def _rewritten(self) -> bool:
        """Whether the bytes before the end of what was read are no longer those read: a resume
        cut the file and wrote it longer again between two polls, which the tail cannot see."""
        if not self._end:
            return False
        try:
            with open(self.path, "rb") as f:
                f.seek(self._end - len(self._print))
                return f.read(len(self._print)) != self._print
        except OSError:
            return True

    def poll(self) -> int:
        """Read the new complete rows; returns how many. After a rewrite, everything is read again."""
        if self._rewritten():
            self._start()
        new = self.tail.poll()
        if self.tail.reset and self.rows:
            self._start()
            new = self.tail.poll()
        for cells in new:
            self._hash.update(("\x1f".join(cells) + "\n").encode())
            self.digests.append(self._hash.hexdigest())
        self.rows += new
        if new:
            self._end = self.tail.consumed
            with open(self.path, "rb") as f:
                f.seek(max(0, self._end - _FINGERPRINT))
                self._print = f.read(self._end - f.tell())
        return len(new)

    def kept(self, count: int, digest: str | None) -> bool:
        """Whether the first ``count`` rows are those an exporter wrote (their digest ``digest``)."""
        return count <= len(self.rows) and self.digests[count] == digest

    def dicts(self, start: int = 0) -> list[dict[str, str]]:
        return [dict(zip(self.header, cells)) for cells in self.rows[start:]]


class RunSource:
    """One run's files: ``epochs`` and ``batches`` (``Rows``), and its sidecar."""

    def __init__(self, project: Project, run_id: str):
        self.project, self.run_id = project, run_id
        self.epochs = Rows(project.epoch_csv(run_id))
        self.batches = Rows(project.batch_csv(run_id))
        self.sidecar_path = project.sidecar(run_id)
        self.sidecar: dict[str, Any] = {}

    def poll(self) -> int:
        """Read the sidecar, then the new rows (a run marks itself ended only after its last row,
        so a status read first and no new rows after it means the end). Returns the new rows."""
        self.sidecar = read_sidecar(self.sidecar_path) or {}
        return self.epochs.poll() + self.batches.poll()

    @property
    def status(self) -> str:
        return run_status(self.project, self.run_id, self.sidecar or None)

    @property
    def monitor(self) -> str:
        return str(self.sidecar.get("monitor") or C.AVG_LOSS)

    def options(self) -> dict[str, Any]:
        """The run's options, as plain values (bool, int, float, str)."""
        config = self.sidecar.get("config") or {}
        return {k: plain(v) for k, v in config.items() if k not in NOT_OPTIONS}

    def start_time(self) -> float | None:
        return parse_time(str(self.sidecar.get("start_time") or ""))

    def batch_steps(self, start: int = 0) -> list[int]:
        """The global batch index of each batch row from ``start``: ``(epoch - 1) x batches per
        epoch + batch`` when the sidecar knows the batches per epoch, else the row's position."""
        per_epoch = self.sidecar.get("batches_per_epoch")
        steps = []
        for i, row in enumerate(self.batches.dicts(start), start):
            try:
                steps.append((int(row[C.EPOCH]) - 1) * int(per_epoch) + int(row[C.BATCH]))
            except (KeyError, TypeError, ValueError):
                steps.append(i)
        return steps


def plain(value: Any) -> bool | int | float | str:
    if value is None:
        return "none"
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def number(text: str | None) -> float | None:
    """A cell as a float (``True``/``False`` as 1/0), or None when it is empty or not a number."""
    if text is None or text.strip() == "":
        return None
    if text.strip() in ("True", "False"):
        return float(text.strip() == "True")
    try:
        return float(text)
    except ValueError:
        return None


def parse_time(text: str) -> float | None:
    """A ``YYYY-mm-dd HH:MM:SS`` timestamp (local time, as medic writes them) in epoch seconds."""
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def prepare_dir(path: str | os.PathLike, what: str) -> Path:
    """Create the export folder (and its parents), or say in one line why it cannot be."""
    folder = Path(path).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MedicError(f"cannot create the {what} folder {folder}: {err.strerror or err}") from err
    if not os.access(folder, os.W_OK):
        raise MedicError(f"cannot write to the {what} folder {folder}")
    return folder
