"""Narrowing and ranking the table of runs: the filters of ``medic runs`` and ``medic.catalog``,
and of the notebooks' run pickers. They work on the catalog's rows, so a filter over thousands of
runs reads nothing the listing did not.

    status   one status or several ("running", ["completed", "stopped"], "failed,interrupted")
    sweep    the runs one sweep started
    since    runs started on or after a date ("2025-11-01", "2025-11-01 14:30", a datetime)
    top, by  the N best runs by a figure, best first. ``by`` is ``best`` (each run's monitored
             best: the runs must monitor the same metric), an epoch column (its best value over
             the run's epochs, added as a column), or one of RANKED. Which way is better comes
             from the monitor's rule: the sidecar's ``monitor_mode`` for the metric a run
             monitors, else the metric's name (Dice, accuracy, ... higher; losses, HD95 lower).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from medic.errors import MedicError
from medic.store.columns import direction as metric_mode
from medic.store.status import STATUSES

# what ``status`` may name: the status table, and the words for a run without a sidecar or whose
# process cannot be checked and which has not written for long
KNOWN_STATUSES = STATUSES
# catalog columns a run can be ranked by, and which way is better
RANKED = {"last_loss": "min", "total_time_s": "min", "time_per_epoch_s": "min", "samples_per_s": "max",
          "epochs_done": "max"}
FILTERS = ("status", "sweep", "since", "top", "by")


def statuses(value: Any) -> list[str]:
    """The statuses named by ``value`` (a word, comma-separated words, or a list), checked."""
    words = value.split(",") if isinstance(value, str) else list(value)
    words = [str(w).strip() for w in words if str(w).strip()]
    unknown = [w for w in words if w not in KNOWN_STATUSES]
    if unknown or not words:
        raise MedicError(f"unknown status {', '.join(map(repr, unknown)) or repr(value)}: "
                         f"choose from {', '.join(KNOWN_STATUSES)}")
    return words


def since_time(value: Any):
    """``value`` as a Timestamp: a date, or a date and time, as text or as a datetime."""
    import pandas as pd
    if isinstance(value, (datetime, date)):
        return pd.Timestamp(value)
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return pd.Timestamp(datetime.strptime(str(value).strip(), fmt))
        except ValueError:
            continue
    raise MedicError(f"--since {value!r} is not a date: use YYYY-MM-DD, e.g. 2025-11-01 "
                     "(or 'YYYY-MM-DD HH:MM')")


def _direction(row: dict[str, Any], by: str) -> str:
    if by == "best" or by == row["monitor"]:
        mode = row.get("_mode")
        return mode if mode in ("min", "max") else metric_mode(row["monitor"])
    return RANKED.get(by) or metric_mode(by)


def _value(row: dict[str, Any], by: str) -> float:
    if by in RANKED or by == "best":
        value = row.get(by)
        return float(value) if value is not None else float("nan")
    low, high = row.get("_x", {}).get(by) or (float("nan"), float("nan"))
    return high if _direction(row, by) == "max" else low


def select(rows: list[dict[str, Any]], **filters: Any) -> list[dict[str, Any]]:
    """The rows that pass ``filters`` (see the module docstring), ranked when ``top`` or ``by``
    is given, else in their order.

    Args:
        rows: the catalog's rows (``medic.store.runlist.rows``).
        **filters: ``status``, ``sweep``, ``since``, ``top``, ``by``.

    Raises:
        MedicError: an unknown filter, or a value that is not one.
    """
    unknown = [k for k in filters if k not in FILTERS]
    if unknown:
        raise MedicError(f"unknown filter(s) {', '.join(unknown)}: use {', '.join(FILTERS)}")
    if filters.get("status"):
        wanted = set(statuses(filters["status"]))
        rows = [r for r in rows if r["status"] in wanted]
    if filters.get("sweep"):
        rows = [r for r in rows if r["sweep"] == str(filters["sweep"])]
    if filters.get("since") not in (None, ""):
        start = since_time(filters["since"])
        rows = [r for r in rows if r["start"] == r["start"] and r["start"] >= start]
    top, by = filters.get("top"), filters.get("by")
    if top is None and not by:
        return rows
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise MedicError(f"--top must be a whole number >= 1, got {top!r}")
    return rank(rows, str(by or "best"), top)


def rank(rows: list[dict[str, Any]], by: str, top: int | None = None) -> list[dict[str, Any]]:
    """The rows with a value of ``by``, best first (ties: older run first), at most ``top``.

    Args:
        rows: the catalog's rows.
        by: ``best``, an epoch column, or one of RANKED.
        top: how many to keep (None: all).
    """
    if by == "best":
        monitors = sorted({r["monitor"] for r in rows if r["best"] == r["best"]})
        if len(monitors) > 1:
            raise MedicError(f"these runs monitor different metrics ({', '.join(monitors)}): rank them "
                             f"by one of them, e.g. --by {monitors[0]}, or narrow them first (--sweep)")
    elif by not in RANKED and not any(by in r.get("_x", {}) for r in rows):
        if rows:
            raise MedicError(f"--by {by!r}: no listed run records it; use best, an epoch column "
                             f"(Avg_Loss, Val_Dice, ...) or one of {', '.join(RANKED)}")
    scored = []
    for k, row in enumerate(rows):
        value = _value(row, by)
        if value == value:
            key = -value if _direction(row, by) == "max" else value
            scored.append((key, k, {**row, by: value} if by not in RANKED and by != "best" else row))
    scored.sort(key=lambda t: (t[0], t[1]))
    return [row for _, _, row in scored[:top]]
