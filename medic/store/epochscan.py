"""What the run catalog needs from an epoch CSV, read fast and kept up to date as the file grows.

``scan_epoch_csv`` returns a small state (a JSON-able dict): the epochs done, the best value and
its epoch, the last loss, the epoch times and samples/s summed, each numeric extra column's lowest
and highest value, and where in the file the reading stopped. Given the state of an earlier read,
it parses only the lines added since, after checking that the bytes before the point it stopped
at are still the same (a resume that cut and rewrote rows is read again from the start).

The plain-text parse is for the files medic writes: ASCII, no quotes, one strictly increasing
epoch per line, every cell a plain number. Anything else (a hand-made CSV, a repeated epoch, a
``nan`` in a loss column, a malformed line) is read by ``read_epoch_csv``, which gives the same
figures, or the same error, as ``medic runs`` always has.

The sums are numpy's pairwise sums, kept incrementally (the eight partial sums of its unrolled
loop and the values after the last full block of eight), so a total or a mean is bit for bit the
one pandas computes over the whole column. Past 128 rows numpy splits the column in halves: such
a file is summed from all its rows, and parsed whole again when it grows.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from medic.store import columns as C
from medic.store.logger import EPOCH_COLUMNS

NAN = float("nan")
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}
_FLOATS = (C.AVG_LOSS, C.MIN_BATCH_LOSS, C.MAX_BATCH_LOSS, C.LEARNING_RATE, C.EPOCH_TIME,
           C.BEST_SO_FAR)
_NOT_METRICS = set(EPOCH_COLUMNS) - {C.AVG_LOSS, C.MIN_BATCH_LOSS, C.MAX_BATCH_LOSS, C.LEARNING_RATE,
                                     C.EPOCH_TIME}
BLOCK, PAIRWISE_MAX = 8, 128


class _Slow(Exception):
    """The file is not in the plain form the fast parse takes: read it with ``read_epoch_csv``."""


# --- numpy's pairwise sum, kept as the values come --------------------------------------------

def sum_new() -> list:
    """An empty running sum: [count, the eight partial sums or None, the values not in a block]."""
    return [0, None, []]


def sum_add(state: list, value: float) -> None:
    """Add ``value`` (a NaN counts as 0, as in pandas' sum)."""
    value = 0.0 if value != value else value
    state[0] += 1
    state[2].append(value)
    if state[1] is None and len(state[2]) == BLOCK:
        state[1], state[2] = state[2], []
    elif state[1] is not None and len(state[2]) == BLOCK:
        state[1] = [a + v for a, v in zip(state[1], state[2])]
        state[2] = []


def sum_value(state: list) -> float:
    """The sum numpy gives for the values added (at most 128 of them)."""
    acc, rest = state[1], state[2]
    if acc is None:
        total = 0.0
    else:
        total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    for v in rest:
        total += v
    return total


def pairwise_sum(values: list[float]) -> float:
    """numpy's sum of ``values`` (NaN already 0), any length: halves past 128 values."""
    n = len(values)
    if n > PAIRWISE_MAX:
        half = n // 2
        half -= half % BLOCK
        return pairwise_sum(values[:half]) + pairwise_sum(values[half:])
    state = sum_new()
    for v in values:
        sum_add(state, v)
    return sum_value(state)


# --- the state -----------------------------------------------------------------------------------

def new_state() -> dict[str, Any]:
    return {"n": 0, "epoch": None, "best": NAN, "best_epoch": None, "min_loss": NAN, "min_epoch": None,
            "last_loss": NAN, "t": sum_new(), "t_n": 0, "t_max": NAN, "s": sum_new(), "s_n": 0,
            "x": {}, "offset": 0, "header": None, "tail": "", "incremental": True}


FIGURES = ("n", "epochs_done", "best", "best_epoch", "last_loss", "total_time_s", "time_per_epoch_s",
           "samples_per_s", "longest_epoch_s", "min_loss")


def figures(state: dict[str, Any]) -> dict[str, Any]:
    """The catalog's columns from a state: epochs_done, best, best_epoch, last_loss, total_time_s,
    time_per_epoch_s, samples_per_s; and n (rows), longest_epoch_s (for the liveness check),
    min_loss (for ranking by Avg_Loss)."""
    if not state["n"]:
        return {"n": 0, "min_loss": NAN, "epochs_done": 0, "best": NAN, "best_epoch": None, "last_loss": NAN,
                "total_time_s": 0.0, "time_per_epoch_s": NAN, "samples_per_s": NAN, "longest_epoch_s": 0.0}
    total = state["t_total"] if "t_total" in state else sum_value(state["t"])
    s_total = state["s_total"] if "s_total" in state else sum_value(state["s"])
    best_epoch = state["best_epoch"] if state["best_epoch"] is not None else state["min_epoch"]
    longest = state["t_max"]
    return {"n": state["n"], "min_loss": state["min_loss"], "epochs_done": state["epoch"], "best": state["best"],
            "best_epoch": best_epoch, "last_loss": state["last_loss"], "total_time_s": total,
            "time_per_epoch_s": total / state["t_n"] if state["t_n"] else NAN,
            "samples_per_s": s_total / state["s_n"] if state["s_n"] else NAN,
            "longest_epoch_s": longest if longest == longest else 0.0}


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _number(cell: str) -> float:
    """A required number cell: empty is NaN; a text that is not a plain number goes the slow way
    (where it is an error naming the line, as it always was)."""
    if not cell or cell.isspace():
        return NAN
    value = float(cell)  # ValueError: caught by the caller
    if value != value:
        raise _Slow
    return value


def _parse(state: dict[str, Any], header: list[str], text: str, keep: tuple[list, list] | None = None) -> None:
    """Fold the complete lines ``text`` into ``state`` (and each row's epoch time and samples/s
    into the lists ``keep``); raises _Slow for anything unusual."""
    if not text.isascii() or '"' in text or "_" in text or "\r" in text:
        raise _Slow
    index = {c: i for i, c in enumerate(header)}
    e_i, best_i, flag_i = index[C.EPOCH], index[C.BEST_SO_FAR], index[C.IS_BEST]
    # every numeric column: its position, whether a text in it is an error (a standard column),
    # and its extremes (kept for the extra columns, which runs can be ranked by)
    metrics = [(i, c in _FLOATS, None if c in EPOCH_COLUMNS else state["x"].setdefault(c, [NAN, NAN]))
               for i, c in enumerate(header) if c not in _NOT_METRICS]
    loss_at = [k for k, m in enumerate(metrics) if header[m[0]] == C.AVG_LOSS][0]
    time_at = [k for k, m in enumerate(metrics) if header[m[0]] == C.EPOCH_TIME][0]
    sps_at = next((k for k, m in enumerate(metrics) if header[m[0]] == C.SAMPLES_PER_SECOND), None)
    ncols = len(header)
    for line in text.split("\n")[:-1]:
        cells = line.split(",")
        if len(cells) != ncols:
            raise _Slow
        values = []
        try:
            epoch = int(cells[e_i])
            best = _number(cells[best_i])
            for i, strict, lo_hi in metrics:
                if strict:
                    v = _number(cells[i])
                else:
                    try:
                        v = float(cells[i]) if cells[i] else NAN
                    except ValueError:
                        v = NAN
                values.append(v)
                if v == v and lo_hi is not None:
                    if not lo_hi[0] <= v:
                        lo_hi[0] = v
                    if not lo_hi[1] >= v:
                        lo_hi[1] = v
        except ValueError:
            raise _Slow from None
        flag = _TRUE.get(cells[flag_i].strip().lower())
        if flag is None or epoch < 0 or (state["epoch"] is not None and epoch <= state["epoch"]):
            raise _Slow  # an error to name, or a repeated epoch: the full reader sorts it out
        loss, seconds = values[loss_at], values[time_at]
        state["n"] += 1
        state["epoch"], state["best"], state["last_loss"] = epoch, best, loss
        if flag:
            state["best_epoch"] = epoch
        if loss == loss and not loss >= state["min_loss"]:
            state["min_loss"], state["min_epoch"] = loss, epoch
        sum_add(state["t"], seconds)
        if seconds == seconds:
            state["t_n"] += 1
            if not state["t_max"] >= seconds:
                state["t_max"] = seconds
        if sps_at is not None:
            sum_add(state["s"], values[sps_at])
            state["s_n"] += values[sps_at] == values[sps_at]
        if keep is not None:
            keep[0].append(seconds)
            if sps_at is not None:
                keep[1].append(values[sps_at])


def _header(head: bytes) -> list[str] | None:
    """The header of a plain medic CSV, or None for anything else."""
    try:
        line = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    names = line.split(",")
    plain = all(n and n == n.strip() and '"' not in n for n in names) and len(set(names)) == len(names)
    return names if plain and all(c in names for c in EPOCH_COLUMNS) else None


def scan_epoch_csv(path: str | os.PathLike, prior: dict[str, Any] | None = None) -> dict[str, Any]:
    """The catalog state of the epoch CSV ``path``; with ``prior`` only the lines added since are
    parsed when that is safe.

    Args:
        path: the epoch CSV.
        prior: an earlier state of the same file (left unchanged), or None.

    Raises ``DataFileError`` (or ``RunNotFoundError``) for a file that ``read_epoch_csv`` rejects.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if prior is not None and prior["incremental"] and prior["offset"]:
                state = _grown(f, prior)
                if state is not None:
                    return state
                f.seek(0)
            return _whole(f, path)
    except FileNotFoundError:
        return _slow(path)
    except _Slow:
        return _slow(path)


def _whole(f, path: Path) -> dict[str, Any]:
    data = f.read()
    first = data.find(b"\n")
    header = _header(data[:first]) if first > 0 else None
    if header is None:
        return _slow(path)
    end = data.rfind(b"\n") + 1
    state, keep = new_state(), ([], [])
    _parse(state, header, data[first + 1:end].decode("ascii") if end > first + 1 else "", keep)
    state.update(offset=end, header=header, tail=_hash(data[:end]))
    if state["n"] > PAIRWISE_MAX:  # numpy sums halves past 128 values: summed here from all of them
        state.update(t_total=pairwise_sum(keep[0]), s_total=pairwise_sum(keep[1]), incremental=False)
    return state


def _grown(f, prior: dict[str, Any]) -> dict[str, Any] | None:
    """``prior`` brought up to date from its offset, or None when the bytes before it changed
    (a resume that cut rows, a file edited or replaced)."""
    offset = prior["offset"]
    data = f.read()  # an epoch CSV is small: the bytes already read are hashed, not parsed again
    if len(data) < offset or _hash(data[:offset]) != prior["tail"]:
        return None
    end = data.rfind(b"\n") + 1
    state = {**prior, "t": [prior["t"][0], prior["t"][1] and list(prior["t"][1]), list(prior["t"][2])],
             "s": [prior["s"][0], prior["s"][1] and list(prior["s"][1]), list(prior["s"][2])],
             "x": {c: list(v) for c, v in prior["x"].items()}}
    if end > offset:
        _parse(state, prior["header"], data[offset:end].decode("ascii"))
        state.update(offset=end, tail=_hash(data[:end]))
    return state if state["n"] <= PAIRWISE_MAX else None  # past 128 rows: summed from all rows


def _slow(path: Path) -> dict[str, Any]:
    """The state from ``read_epoch_csv``'s typed frame (the figures ``medic runs`` always showed)."""
    from medic.store.readers import read_epoch_csv
    return state_from_frame(read_epoch_csv(path, allow_empty=True))


def state_from_frame(epochs) -> dict[str, Any]:
    """A state (not incremental: any change reads the file again) from a typed epoch frame."""
    import pandas as pd
    state = new_state()
    state["incremental"] = False
    if not len(epochs):
        return state
    best_rows = epochs[epochs[C.IS_BEST]]
    loss = epochs[C.AVG_LOSS]
    times = epochs[C.EPOCH_TIME]
    state.update(n=len(epochs), epoch=int(epochs[C.EPOCH].iloc[-1]),
                 best=float(epochs[C.BEST_SO_FAR].iloc[-1]), last_loss=float(loss.iloc[-1]),
                 t_total=float(times.sum()), t_n=int(times.notna().sum()), t_max=float(times.max()))
    if len(best_rows):
        state["best_epoch"] = int(best_rows[C.EPOCH].iloc[-1])
    elif loss.notna().any():
        state["min_epoch"] = int(epochs.loc[loss.idxmin(), C.EPOCH])
    if loss.notna().any():
        state["min_loss"] = float(loss.min())
    if C.SAMPLES_PER_SECOND in epochs.columns:
        sps = pd.to_numeric(epochs[C.SAMPLES_PER_SECOND], errors="coerce")
        state.update(s_total=float(sps.sum()), s_n=int(sps.notna().sum()))
    for c in epochs.columns:
        if c in EPOCH_COLUMNS:
            continue
        values = pd.to_numeric(epochs[c], errors="coerce")
        if values.notna().any():
            state["x"][c] = [float(values.min()), float(values.max())]
    return state


def extra_extremes(state: dict[str, Any]) -> dict[str, list[float]]:
    """{column: [lowest, highest]} of the extra columns (Val_Dice, ...) with a number in them."""
    return {c: v for c, v in state["x"].items() if v[0] == v[0]}
