"""A cache of a big batch CSV's parsed columns, so that analysing it again after it grew (a
notebook re-running its cell on a live run, ``medic analyze`` during training) parses only the
rows that were added.

One folder per CSV, ``<project>/analysis/.cache/<csv name>/`` (not in ``metrics/``, where the
guide's clean-up commands work): the columns ``read_batch_arrays`` returns as raw little-endian
arrays that only ever grow (``epochs.i64``: epoch value and first row of each stretch of one
epoch; ``loss.f32``; ``lr.f32``), and ``meta.json``, written atomically after them, which says
how much of the arrays and of the CSV they cover: the byte offset of the CSV's first row not
read yet, and a fingerprint of the CSV's bytes up to there.

The fingerprint hashes the header, the whole last 1 MiB before the offset and 64 blocks of 4 KiB
spread evenly over the rest (a few MB read, whatever the file's size). A file rewritten by a
resume that cut rows is shorter than the offset, or differs in its last MiB (the rows written
again carry new timestamps): the cache is rebuilt from the file, and a reader never uses
arrays the fingerprint does not vouch for. Writers hold an exclusive lock on the folder,
readers a shared one, so two analyses of the same file at once cannot see a half update.

Each build of the arrays from scratch gets a new ``generation``; appending keeps it. What an
analysis derives from the rows (``Slot.save``: named ``.npz`` files, e.g. the batch analysis's
per-epoch summary) is stored with the generation and the rows it covers, and is handed back by
``Slot.load`` only while the arrays are still that generation, so it describes a prefix of them.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medic.store.files import write_atomic, write_json_atomic
from medic.store.readers import BatchArrays, complete_size, keep_last_epochs, read_batch_arrays

VERSION = 2
MIN_BYTES = 16 << 20  # smaller files parse in a fraction of a second: no cache
HEAD, TAIL, BLOCK, SAMPLES = 64 << 10, 1 << 20, 4 << 10, 64


def fingerprint(path: Path, offset: int) -> str:
    """A hash of ``path``'s bytes below ``offset``: the first 64 KiB, the last MiB, and 64 blocks
    of 4 KiB between them."""
    spans = [(0, min(HEAD, offset)), (max(0, offset - TAIL), min(TAIL, offset))]
    middle = max(0, offset - TAIL - HEAD)
    spans += [(HEAD + middle * k // SAMPLES, min(BLOCK, middle)) for k in range(SAMPLES)] if middle else []
    h = hashlib.blake2b(str(offset).encode(), digest_size=16)
    with open(path, "rb") as f:
        for start, size in spans:
            f.seek(start)
            h.update(f.read(size))
    return h.hexdigest()


@contextmanager
def _locked(folder: Path, exclusive: bool):
    with open(folder / "lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load(folder: Path, path: Path, size: int) -> tuple[BatchArrays, dict] | None:
    """The cached arrays and their meta, when they still describe ``path``; else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != VERSION or not 0 < meta["offset"] <= size:
            return None
        if meta["fingerprint"] != fingerprint(path, meta["offset"]):
            return None
        rows, segs, meta["generation"] = meta["rows"], meta["segments"], str(meta["generation"])
        seg = np.fromfile(folder / "epochs.i64", dtype="<i8", count=2 * segs)
        loss = np.fromfile(folder / "loss.f32", dtype="<f4", count=rows)
        lr = np.fromfile(folder / "lr.f32", dtype="<f4", count=rows) if meta["lr"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(seg) != 2 * segs or len(loss) != rows or (lr is not None and len(lr) != rows):
        return None
    values, starts = seg[0::2].copy(), seg[1::2].copy()
    counts = np.diff(np.r_[starts, rows]).astype(np.int64)
    return BatchArrays(path, values, starts, counts, loss, lr, None), meta


def _join(old: BatchArrays, new: BatchArrays) -> tuple[BatchArrays, int]:
    """``old`` followed by ``new``; also the number of ``new``'s stretches that are new (its
    first continues ``old``'s last epoch when they share the epoch value)."""
    values, starts = new.epoch_values, new.starts + old.rows
    if len(values) and len(old.epoch_values) and values[0] == old.epoch_values[-1]:
        values, starts = values[1:], starts[1:]
    rows = old.rows + new.rows
    all_starts = np.r_[old.starts, starts].astype(np.int64)
    lr = np.concatenate([old.lr, new.lr]) if old.lr is not None and new.lr is not None else None
    joined = BatchArrays(old.path, np.r_[old.epoch_values, values].astype(np.int64), all_starts,
                         np.diff(np.r_[all_starts, rows]).astype(np.int64),
                         np.concatenate([old.loss, new.loss]), lr, None)
    return joined, len(values)


def _pairs(values: np.ndarray, starts: np.ndarray) -> bytes:
    return np.stack([values, starts], axis=1).astype("<i8").tobytes()


def _save(folder: Path, path: Path, data: BatchArrays, offset: int, append: tuple[int, int] | None,
          generation: str) -> None:
    """Write the arrays (only the added rows and stretches when ``append`` = (rows, stretches)
    were cached before) and then the meta that vouches for them."""
    mode = "ab" if append else "wb"
    rows0, segs0 = append or (0, 0)
    (folder / "meta.json").unlink(missing_ok=True)  # arrays being rewritten: vouch for nothing
    with open(folder / "epochs.i64", mode) as f:
        f.write(_pairs(data.epoch_values[segs0:], data.starts[segs0:]))
    with open(folder / "loss.f32", mode) as f:
        f.write(data.loss[rows0:].astype("<f4").tobytes())
    if data.lr is not None:
        with open(folder / "lr.f32", mode) as f:
            f.write(data.lr[rows0:].astype("<f4").tobytes())
    write_json_atomic(folder / "meta.json", {
        "version": VERSION, "csv": path.name, "offset": offset, "fingerprint": fingerprint(path, offset),
        "rows": data.rows, "segments": len(data.epoch_values), "lr": data.lr is not None,
        "generation": generation})


@dataclass(frozen=True)
class Slot:
    """Where an analysis keeps what it derived from one generation of a CSV's cached arrays."""

    folder: Path
    generation: str

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays saved as ``name`` for this generation (with ``rows``: how many rows they
        cover), or None."""
        try:
            with np.load(self.folder / f"{name}.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError, EOFError):
            return None
        if str(arrays.pop("generation", "")) != self.generation:
            return None
        return arrays

    def save(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Keep ``arrays`` as ``name`` for this generation (atomically; a read-only project is
        left alone)."""
        buf = io.BytesIO()
        np.savez(buf, generation=np.array(self.generation), **arrays)
        try:
            write_atomic(self.folder / f"{name}.npz", buf.getvalue())
        except OSError:
            pass


def read_batch_arrays_cached(path: str | os.PathLike, cache_dir: str | os.PathLike | None) -> BatchArrays:
    """``read_batch_arrays(path)``, through the cache in ``cache_dir`` for big files (see
    ``cached_batch_arrays``)."""
    return cached_batch_arrays(path, cache_dir)[0]


def cached_batch_arrays(path: str | os.PathLike, cache_dir: str | os.PathLike | None) -> tuple[BatchArrays, Slot | None]:
    """``read_batch_arrays(path)``, through the cache in ``cache_dir`` for big files: the rows
    cached before are loaded, only the bytes added since are parsed, and the cache is brought up
    to date. Without ``cache_dir``, for small files, or when the cache cannot be written, the
    file is simply read (and the slot is None)."""
    path = Path(path)
    size = complete_size(path)
    if cache_dir is None or size < MIN_BYTES:
        return read_batch_arrays(path), None
    folder = Path(cache_dir) / path.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return read_batch_arrays(path), None
    with _locked(folder, exclusive=False):
        cached = _load(folder, path, size)
    if cached is not None and cached[1]["offset"] == size:
        return keep_last_epochs(cached[0]), Slot(folder, cached[1]["generation"])
    with _locked(folder, exclusive=True):
        cached = _load(folder, path, size)  # another process may have updated it meanwhile
        if cached is None:
            data = read_batch_arrays(path, limit=size, keep_last=False)
            append, generation = None, secrets.token_hex(8)
        else:
            old, meta = cached
            data, _ = _join(old, read_batch_arrays(path, begin=meta["offset"], limit=size, keep_last=False))
            append, generation = (old.rows, len(old.epoch_values)), meta["generation"]
        try:
            _save(folder, path, data, size, append, generation)
        except OSError:
            return keep_last_epochs(data), None  # a read-only project: the analysis goes on without a cache
    return keep_last_epochs(data), Slot(folder, generation)
