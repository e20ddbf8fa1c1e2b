"""Read metrics CSVs into typed pandas / numpy data, tolerating a file that is still being written.

Every reader here sees only *complete* lines: a last line without its newline (a run killed
mid-write, or a row being written right now) is left out, never parsed into a half number.
Anything else that is wrong — a missing, empty, header-only, binary or non-numeric file, or one
without the needed columns — raises ``DataFileError`` with one line naming the file and the problem.

``read_epoch_csv`` types the epoch columns (Epoch int, losses float, Is_Best_Model bool,
Timestamp datetime) and keeps the last row of an epoch that appears twice. ``read_batch_arrays``
is the fast path for batch CSVs of millions of rows: only the needed columns, explicit compact
dtypes, read in chunks, epochs kept run-length encoded.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medic.errors import DataFileError, RunNotFoundError
from medic.store import columns as C
from medic.store.files import shown_path
from medic.store.columns import EPOCH_COLUMNS

# The columns an analysis cannot do without; the other standard ones are derived when absent.
EPOCH_REQUIRED = (C.EPOCH, C.AVG_LOSS, C.MIN_BATCH_LOSS, C.MAX_BATCH_LOSS, C.LEARNING_RATE,
                  C.EPOCH_TIME)
EPOCH_FLOATS = (C.AVG_LOSS, C.MIN_BATCH_LOSS, C.MAX_BATCH_LOSS, C.LEARNING_RATE,
                C.EPOCH_TIME, C.BEST_SO_FAR)
BATCH_REQUIRED = (C.EPOCH, C.BATCH, C.LOSS)
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}
_TS_FORMAT = "%Y-%m-%d %H:%M:%S"


class _Upto(io.RawIOBase):
    """A file seen only up to ``limit`` bytes: hides a partial last line from the CSV parser."""

    def __init__(self, f, limit: int):
        self._f, self._left = f, limit

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        got = self._f.readinto(memoryview(b)[:n])
        self._left -= got
        return got


def complete_size(path: str | os.PathLike) -> int:
    """Bytes of ``path`` up to and including its last newline (0 if it has none yet)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        pos, block = size, 1 << 16
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            cut = f.read(pos - start).rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            pos = start
    return 0


def read_header(path: str | os.PathLike) -> list[str]:
    """The column names of a metrics CSV, after checking it is a non-empty text CSV."""
    path = Path(path)
    name = shown_path(path)
    if path.is_dir():
        raise DataFileError(f"{name} is a folder, not a CSV file")
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except FileNotFoundError:
        raise RunNotFoundError(f"metrics file not found: {name}") from None
    except OSError as err:
        raise DataFileError(f"cannot read {name}: {err.strerror or err}") from None
    if not head.strip():
        raise DataFileError(f"{name} is empty (no header, no rows)")
    if b"\0" in head or head.startswith((b"\x89PNG", b"PK\x03\x04", b"%PDF", b"\x1f\x8b")):
        raise DataFileError(f"{name} is not a CSV text file (binary content)")
    if b"\n" not in head:
        if len(head) == 1 << 16:
            raise DataFileError(f"{name} is not a metrics CSV (no line break in its first 64 KiB)")
        raise DataFileError(f"{name} has no complete header line yet (empty or still being written)")
    line = head.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").strip("\r")
    return [c.strip().strip('"') for c in line.split(",")]


def _check_columns(path: Path, header: list[str], required: tuple[str, ...], kind: str) -> None:
    missing = [c for c in required if c not in header]
    if not missing:
        return
    hint = ""
    if len(header) == 1 and ";" in header[0]:
        hint = " (it uses ';' between fields: was it re-saved by a spreadsheet? keep the original CSV)"
    elif kind == "epoch" and C.LOSS in header and C.BATCH in header:
        hint = " (this is a batch CSV: use --batch_metrics)"
    elif kind == "batch" and C.AVG_LOSS in header:
        hint = " (this is an epoch CSV, not a batch CSV)"
    shown = ",".join(header)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise DataFileError(f"{shown_path(path)} is not a {kind} metrics CSV: missing column(s) "
                        f"{', '.join(missing)} (found: {shown}){hint}")


def sniff_kind(path: str | os.PathLike) -> str | None:
    """``"epoch"`` or ``"batch"`` from the header of a readable CSV, else None."""
    header = read_header(path)
    if all(c in header for c in EPOCH_REQUIRED):
        return "epoch"
    if all(c in header for c in BATCH_REQUIRED) and C.AVG_LOSS not in header:
        return "batch"
    return None


def _numeric(path: Path, frame: pd.DataFrame, column: str, first_line: int) -> pd.Series:
    """``column`` as float; a cell that is neither empty nor a number is an error naming it."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFileError(f"{shown_path(path)} line {first_line + i}: {column} is {raw.iloc[i]!r}, "
                            "not a number")
    return values.astype("float64")


def empty_epoch_frame(extra: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in EPOCH_COLUMNS})
    frame[C.EPOCH] = frame[C.EPOCH].astype("int64")
    frame[C.IS_BEST] = frame[C.IS_BEST].astype(bool)
    frame[C.TIMESTAMP] = pd.Series(dtype="datetime64[ns]")
    for c in extra or []:
        frame[c] = pd.Series(dtype="float64")
    return frame


def read_epoch_csv(path: str | os.PathLike, *, allow_empty: bool = False) -> pd.DataFrame:
    """A typed DataFrame of an epoch CSV, one row per epoch in epoch order.

    ``allow_empty``: a header-only file (a run before its first epoch ends) gives an empty
    frame instead of an error. Extra columns are numeric when every filled cell is a number,
    text otherwise.
    """
    path = Path(path)
    header = read_header(path)
    _check_columns(path, header, EPOCH_REQUIRED, "epoch")
    size = complete_size(path)
    try:
        with open(path, "rb") as f:
            frame = pd.read_csv(io.BufferedReader(_Upto(f, size)), dtype=str, keep_default_na=False,
                                skipinitialspace=True, encoding_errors="replace")
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame(columns=header)
    except (pd.errors.ParserError, ValueError) as err:
        raise DataFileError(f"{shown_path(path)} is not a well-formed CSV: "
                            f"{str(err).strip().splitlines()[-1]}") from None
    extra = [c for c in frame.columns if c not in EPOCH_COLUMNS]
    if frame.empty:
        if allow_empty:
            return empty_epoch_frame(extra)
        raise DataFileError(f"{shown_path(path)} has a header but no complete rows yet "
                            "(no epoch has finished)")
    out = pd.DataFrame(index=frame.index)
    epoch = _numeric(path, frame, C.EPOCH, 2)
    bad = epoch.isna() | (epoch != epoch.round()) | (epoch < 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFileError(f"{shown_path(path)} line {i + 2}: Epoch is {frame[C.EPOCH].iloc[i]!r}, "
                            "not an epoch number")
    out[C.EPOCH] = epoch.astype("int64")
    for c in EPOCH_FLOATS:
        if c in frame:
            out[c] = _numeric(path, frame, c, 2)
    if C.BEST_SO_FAR not in out:  # a hand-made CSV: derive what the logger would have written
        out[C.BEST_SO_FAR] = out[C.AVG_LOSS].cummin()
    if C.IS_BEST in frame:
        flags = frame[C.IS_BEST].fillna("").astype(str).str.strip().str.lower()
        unknown = ~flags.isin(list(_TRUE))
        if unknown.any():
            i = int(np.flatnonzero(unknown.to_numpy())[0])
            raise DataFileError(f"{shown_path(path)} line {i + 2}: Is_Best_Model is "
                                f"{frame[C.IS_BEST].iloc[i]!r}, not True/False")
        out[C.IS_BEST] = flags.map(_TRUE).astype(bool)
    else:
        best = out[C.BEST_SO_FAR]
        out[C.IS_BEST] = (best != best.shift()).to_numpy() & best.notna().to_numpy()
    stamps = frame[C.TIMESTAMP] if C.TIMESTAMP in frame else pd.Series("", index=frame.index)
    out[C.TIMESTAMP] = pd.to_datetime(stamps.fillna("").astype(str).str.strip(), format=_TS_FORMAT,
                                      errors="coerce")
    out = out[list(EPOCH_COLUMNS)]
    for c in extra:
        values = pd.to_numeric(frame[c], errors="coerce")
        filled = frame[c].notna() & (frame[c].astype(str).str.strip() != "")
        out[c] = values.astype("float64") if not (values.isna() & filled).any() else frame[c]
    # a resumed run is truncated by its writer, but a file pieced together by hand may repeat
    # an epoch: the later row is the one that run really produced
    out = out.drop_duplicates(C.EPOCH, keep="last").sort_values(C.EPOCH, kind="stable")
    return out.reset_index(drop=True)


def read_batch_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A typed DataFrame of a batch CSV with every column (for notebooks; ``read_batch_arrays``
    is the compact fast path). An (Epoch, Batch) pair that appears twice keeps its last row."""
    path = Path(path)
    header = read_header(path)
    _check_columns(path, header, BATCH_REQUIRED, "batch")
    dtypes = {C.EPOCH: np.int64, C.BATCH: np.int64, C.LOSS: np.float64, C.LEARNING_RATE: np.float64,
              C.TIMESTAMP: str}
    limit = complete_size(path)
    try:
        with open(path, "rb") as f:
            frame = pd.read_csv(io.BufferedReader(_Upto(f, limit), 1 << 20),
                                dtype={c: t for c, t in dtypes.items() if c in header})
    except pd.errors.ParserError as err:
        raise DataFileError(f"{shown_path(path)} is not a well-formed CSV: "
                            f"{str(err).strip().splitlines()[-1]}") from None
    except (ValueError, OverflowError):
        _diagnose(path, [c for c in (C.EPOCH, C.BATCH, C.LOSS, C.LEARNING_RATE) if c in header],
                  limit, 1_000_000)
    if frame.empty:
        raise DataFileError(f"{shown_path(path)} has a header but no complete rows yet")
    if C.TIMESTAMP in frame:
        frame[C.TIMESTAMP] = pd.to_datetime(frame[C.TIMESTAMP], format=_TS_FORMAT, errors="coerce")
    epoch = frame[C.EPOCH].to_numpy()
    if len(epoch) > 1 and (epoch[1:] < epoch[:-1]).any() or \
            (C.BATCH in frame and frame.duplicated([C.EPOCH, C.BATCH]).any()):
        keys = [C.EPOCH, C.BATCH] if C.BATCH in frame else [C.EPOCH]
        frame = frame.drop_duplicates(keys, keep="last").sort_values(keys, kind="stable")
    return frame.reset_index(drop=True)


@dataclass
class BatchArrays:
    """A batch CSV as compact arrays. Rows are grouped by epoch (in epoch order): epoch
    ``epoch_values[k]`` covers rows ``starts[k] : starts[k] + counts[k]``."""

    path: Path
    epoch_values: np.ndarray  # int64, one per epoch
    starts: np.ndarray  # int64
    counts: np.ndarray  # int64
    loss: np.ndarray  # float32 per row (NaN/inf kept: they are counted, not hidden)
    lr: np.ndarray | None  # float32 per row
    batch: np.ndarray | None  # int32 per row, when asked for
    order: np.ndarray | None = None  # row positions in the file when rows had to be reordered

    @property
    def rows(self) -> int:
        return len(self.loss)

    def epoch_of_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.epoch_values[np.searchsorted(self.starts, rows, side="right") - 1]


def _diagnose(path: Path, columns: list[str], limit: int, chunk_rows: int) -> None:
    """Find the first cell that is not a number (the fast typed read only says 'ValueError')."""
    with open(path, "rb") as f:
        reader = pd.read_csv(io.BufferedReader(_Upto(f, limit)), usecols=columns, dtype=str,
                             keep_default_na=False, chunksize=chunk_rows)
        line = 2
        for chunk in reader:
            for c in columns:
                _numeric(path, chunk.reset_index(drop=True), c, line)
                if c in (C.EPOCH, C.BATCH):
                    v = pd.to_numeric(chunk[c], errors="coerce")
                    bad = (v.isna() | (v != v.round())).to_numpy()
                    if bad.any():
                        i = int(np.flatnonzero(bad)[0])
                        raise DataFileError(f"{shown_path(path)} line {line + i}: {c} is "
                                            f"{chunk[c].iloc[i]!r}, not a whole number")
            line += len(chunk)
    raise DataFileError(f"{shown_path(path)} has values that are not numbers")


def _ranges(path: Path, limit: int, min_bytes: int = 32 << 20, begin: int | None = None
            ) -> tuple[int, list[tuple[int, int]]]:
    """The header's length and byte ranges of whole lines after it (after ``begin``, a line
    start, when given), one per parsing thread."""
    with open(path, "rb") as f:
        start = len(f.readline()) if begin is None else begin
        parts = max(1, min(os.cpu_count() or 1, 4, (limit - start) // min_bytes))
        edges = [start]
        for k in range(1, parts):
            f.seek(start + (limit - start) * k // parts)
            f.readline()
            edges.append(min(f.tell(), limit))
    edges.append(limit)
    return start, [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def read_batch_arrays(path: str | os.PathLike, *, with_batch: bool = False, chunk_rows: int = 1_000_000,
                      begin: int | None = None, limit: int | None = None, keep_last: bool = True) -> BatchArrays:
    """Read a batch CSV fast and compactly: Epoch (run-length encoded), Loss and
    Learning_Rate as float32, Batch (int32) only when ``with_batch``. Timestamps are skipped.
    Large files are parsed by a few threads at once (pandas' C parser releases the GIL).
    ``begin``/``limit``: only the lines in these bytes (an incremental read; may be empty);
    ``keep_last=False`` leaves an epoch that appears in several stretches as it is.
    """
    from concurrent.futures import ThreadPoolExecutor

    path = Path(path)
    header = read_header(path)
    _check_columns(path, header, BATCH_REQUIRED, "batch")
    columns = [C.EPOCH, C.LOSS] + [c for c in (C.LEARNING_RATE,) if c in header]
    if with_batch and C.BATCH in header:
        columns.append(C.BATCH)
    dtypes = {C.EPOCH: np.int32, C.BATCH: np.int32, C.LOSS: np.float32, C.LEARNING_RATE: np.float32}
    limit = complete_size(path) if limit is None else limit
    _, ranges = _ranges(path, limit, begin=begin)

    def parse(span: tuple[int, int]) -> list[dict[str, np.ndarray]]:
        with open(path, "rb") as f:
            f.seek(span[0])
            reader = pd.read_csv(io.BufferedReader(_Upto(f, span[1] - span[0]), 1 << 20), header=None,
                                 names=header, usecols=columns, dtype={c: dtypes[c] for c in columns},
                                 chunksize=chunk_rows)
            return [{c: chunk[c].to_numpy() for c in columns} for chunk in reader if len(chunk)]

    try:
        with ThreadPoolExecutor(len(ranges)) as pool:
            pieces = [piece for part in pool.map(parse, ranges) for piece in part] if ranges else []
    except pd.errors.ParserError as err:
        raise DataFileError(f"{shown_path(path)} is not a well-formed CSV: "
                            f"{str(err).strip().splitlines()[-1]}") from None
    except (ValueError, OverflowError):
        _diagnose(path, columns, limit, chunk_rows)
    if not pieces and begin is not None:
        return BatchArrays(path, *(np.zeros(0, np.int64) for _ in range(3)), np.zeros(0, np.float32),
                           np.zeros(0, np.float32) if C.LEARNING_RATE in columns else None, None)
    if not pieces:
        raise DataFileError(f"{shown_path(path)} has a header but no complete rows yet")

    seg_values: list[np.ndarray] = []
    seg_starts: list[np.ndarray] = []
    rows = 0
    for piece in pieces:
        epoch = piece.pop(C.EPOCH)
        first = np.r_[0, np.flatnonzero(epoch[1:] != epoch[:-1]) + 1]
        if seg_values and seg_values[-1][-1] == epoch[0]:
            first = first[1:]  # this piece continues the previous piece's epoch
        seg_values.append(epoch[first])
        seg_starts.append(first + rows)
        rows += len(epoch)

    def joined(name: str) -> np.ndarray | None:
        """One column of all pieces, each piece freed once copied (no two full copies at once)."""
        if name not in columns:
            return None
        if len(pieces) == 1:
            return pieces[0].pop(name)
        out, at = np.empty(rows, dtype=pieces[0][name].dtype), 0
        for piece in pieces:
            part = piece.pop(name)
            out[at:at + len(part)] = part
            at += len(part)
        return out

    values = np.concatenate(seg_values).astype(np.int64)
    starts = np.concatenate(seg_starts).astype(np.int64)
    counts = np.diff(np.r_[starts, rows]).astype(np.int64)
    data = BatchArrays(path, values, starts, counts, joined(C.LOSS), joined(C.LEARNING_RATE),
                       joined(C.BATCH))
    return keep_last_epochs(data) if keep_last else data


def keep_last_epochs(data: BatchArrays) -> BatchArrays:
    """``data`` with each epoch once, in order (unchanged when it already is)."""
    values = data.epoch_values
    return _keep_last_epochs(data) if len(values) > 1 and not (values[1:] > values[:-1]).all() else data


def _keep_last_epochs(data: BatchArrays) -> BatchArrays:
    """Rows of an epoch that appears in several stretches (a file pieced together by hand):
    keep the last stretch of each epoch, in epoch order."""
    values = data.epoch_values
    last = {int(v): k for k, v in enumerate(values)}
    keep = sorted(last.values(), key=lambda k: values[k])
    order = np.concatenate([np.arange(data.starts[k], data.starts[k] + data.counts[k]) for k in keep])
    counts = data.counts[keep]
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    pick = (lambda a: None if a is None else a[order])
    return BatchArrays(data.path, values[keep], starts, counts, data.loss[order], pick(data.lr),
                       pick(data.batch), order)
