"""A cache of a big batch CSV's parsed columns, so that analysing it again after it grew (a
notebook re-running its cell on a live run, ``medic analyze`` during training) parses only the
rows that were added.

One folder per CSV, ``<project>/analysis/.cache/<csv name>/`` (not in ``metrics/``, where the
usual clean-up commands work): the columns ``read_batch_arrays`` returns as raw little-endian
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
analysis derives from the rows (``Slot.save``: named ``.arrays`` files, e.g. the batch analysis's
per-epoch summary) is stored with the generation and the rows it covers, and is handed back by
``Slot.load`` only while the arrays are still that generation, so it describes a prefix of them.
"""

from __future__ import annotations

import fcntl
import hashlib
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


def _mapped(file: Path, count: int) -> np.ndarray:
    """The first ``count`` float32 values of ``file``, mapped: only the pages an analysis touches
    are read. The files are only ever appended to or replaced whole (a new file under the same
    name), so a mapping stays valid whatever another process does to the cache."""
    return np.memmap(file, dtype="<f4", mode="r", shape=(count,)) if count else np.zeros(0, np.float32)


def _load(folder: Path, path: Path, size: int) -> tuple[BatchArrays, dict] | None:
    """The cached arrays and their meta, when they still describe ``path``; else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != VERSION or not 0 < meta["offset"] <= size:
            return None
        if meta["fingerprint"] != fingerprint(path, meta["offset"]):
            return None
        rows, segs, meta["generation"] = meta["rows"], meta["segments"], str(meta["generation"])
        if meta["arrays"] != _array_prints(folder, 2 * segs * 8, rows * 4, meta["lr"]):
            return None  # written without fsync: after a crash, read back only what was written
        seg = np.fromfile(folder / "epochs.i64", dtype="<i8", count=2 * segs)
        loss = _mapped(folder / "loss.f32", rows)
        lr = _mapped(folder / "lr.f32", rows) if meta["lr"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(seg) != 2 * segs:
        return None
    values, starts = seg[0::2].copy(), seg[1::2].copy()
    counts = np.diff(np.r_[starts, rows]).astype(np.int64)
    return BatchArrays(path, values, starts, counts, loss, lr, None), meta


def _pairs(values: np.ndarray, starts: np.ndarray) -> bytes:
    return np.stack([values, starts], axis=1).astype("<i8").tobytes()


def _array_prints(folder: Path, seg_bytes: int, row_bytes: int, lr: bool) -> list[str]:
    """Fingerprints of the array files, as far as the meta says they go."""
    files = [("epochs.i64", seg_bytes), ("loss.f32", row_bytes)] + ([("lr.f32", row_bytes)] if lr else [])
    return [fingerprint(folder / name, size) if size else "" for name, size in files]


def _meta(folder: Path, path: Path, offset: int, rows: int, segments: int, lr: bool, generation: str) -> dict:
    return {"version": VERSION, "csv": path.name, "offset": offset, "fingerprint": fingerprint(path, offset),
            "rows": rows, "segments": segments, "lr": lr, "generation": generation,
            "arrays": _array_prints(folder, 2 * segments * 8, rows * 4, lr)}


def _rebuild(folder: Path, path: Path, data: BatchArrays, offset: int) -> str:
    """Replace the arrays with ``data``'s (each file whole, atomically), then the meta that vouches
    for them; returns their new generation."""
    generation = secrets.token_hex(8)
    (folder / "meta.json").unlink(missing_ok=True)  # arrays being rewritten: vouch for nothing
    # not fsynced (a second of a cold analysis): the meta holds the arrays' fingerprints instead
    write_atomic(folder / "epochs.i64", _pairs(data.epoch_values, data.starts), sync=False)
    write_atomic(folder / "loss.f32", lambda f: data.loss.astype("<f4", copy=False).tofile(f), sync=False)
    if data.lr is not None:
        write_atomic(folder / "lr.f32", lambda f: data.lr.astype("<f4", copy=False).tofile(f), sync=False)
    write_json_atomic(folder / "meta.json", _meta(folder, path, offset, data.rows, len(data.epoch_values),
                                                  data.lr is not None, generation))
    return generation


def _append(folder: Path, path: Path, old: BatchArrays, meta: dict, new: BatchArrays, offset: int) -> BatchArrays | None:
    """Append ``new`` (the rows parsed after ``old``) to the arrays and the meta; returns the whole,
    or None when the files are not as the meta says (then the cache is rebuilt)."""
    values, starts = new.epoch_values, new.starts + old.rows
    if len(values) and len(old.epoch_values) and values[0] == old.epoch_values[-1]:
        values, starts = values[1:], starts[1:]  # the last epoch goes on
    files = [folder / "loss.f32"] + ([folder / "lr.f32"] if old.lr is not None else [])
    if (new.lr is None) != (old.lr is None) or any(f.stat().st_size != 4 * old.rows for f in files):
        return None
    (folder / "meta.json").unlink(missing_ok=True)
    with open(folder / "epochs.i64", "ab") as f:
        f.write(_pairs(values, starts))
    for file, part in zip(files, (new.loss, new.lr)):
        with open(file, "ab") as f:
            part.astype("<f4", copy=False).tofile(f)
    rows = old.rows + new.rows
    all_values = np.r_[old.epoch_values, values].astype(np.int64)
    all_starts = np.r_[old.starts, starts].astype(np.int64)
    write_json_atomic(folder / "meta.json", _meta(folder, path, offset, rows, len(all_values), old.lr is not None,
                                                  meta["generation"]))
    return BatchArrays(path, all_values, all_starts, np.diff(np.r_[all_starts, rows]).astype(np.int64),
                       _mapped(files[0], rows), _mapped(files[1], rows) if len(files) > 1 else None, None)


@dataclass(frozen=True)
class Slot:
    """Where an analysis keeps what it derived from one generation of a CSV's cached arrays."""

    folder: Path
    generation: str

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays saved as ``name`` for this generation, or None."""
        arrays = {}
        try:
            with open(self.folder / f"{name}.arrays", "rb") as f:
                names = json.loads(f.readline())
                for key in names:
                    arrays[key] = np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError, TypeError):
            return None
        if str(arrays.pop("generation", "")) != self.generation:
            return None
        return arrays

    def save(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Keep ``arrays`` as ``name`` for this generation (one file: a line of their names, then
        each as ``.npy``; written atomically; a read-only project is left alone)."""
        arrays = {"generation": np.array(self.generation), **arrays}

        def write(f) -> None:
            f.write(json.dumps(list(arrays)).encode() + b"\n")
            for value in arrays.values():
                np.save(f, np.asarray(value), allow_pickle=False)
        try:
            write_atomic(self.folder / f"{name}.arrays", write)
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
    try:
        return _through(folder, path, size)
    except OSError:  # a read-only project: the analysis goes on without a cache
        return read_batch_arrays(path), None


def _stamp(folder: Path) -> tuple[int, int] | None:
    """Which meta file is there (inode, change time), to tell whether it changed."""
    try:
        st = (folder / "meta.json").stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _through(folder: Path, path: Path, size: int) -> tuple[BatchArrays, Slot | None]:
    with _locked(folder, exclusive=False):
        seen, cached = _stamp(folder), _load(folder, path, size)
    if cached is not None and cached[1]["offset"] == size:
        return keep_last_epochs(cached[0]), Slot(folder, cached[1]["generation"])
    with _locked(folder, exclusive=True):
        if _stamp(folder) != seen:  # another process updated it meanwhile
            cached = _load(folder, path, size)
        try:
            data = None
            if cached is not None:
                old, meta = cached
                if meta["offset"] == size:
                    return keep_last_epochs(old), Slot(folder, meta["generation"])
                new = read_batch_arrays(path, begin=meta["offset"], limit=size, keep_last=False)
                data, generation = _append(folder, path, old, meta, new, size), meta["generation"]
            if data is None:
                data = read_batch_arrays(path, limit=size, keep_last=False)
                generation = _rebuild(folder, path, data, size)
        except OSError:  # a read-only project: the analysis goes on without a cache
            if data is None:
                raise
            return keep_last_epochs(data), None
    return keep_last_epochs(data), Slot(folder, generation)
