"""The per-case validation tables a run keeps (``results/<id>/validation_epoch_N.csv``): read
them, and find the worst cases — where a labelling error or a failure mode shows first."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from medic.store.paths import EPOCH_CSV_RE, Project

TABLE_RE = re.compile(r"^validation_epoch_(\d+)\.csv$")
WORST = 5


def results_dir_of(csv_path: str | os.PathLike) -> Path | None:
    """The results folder of the run an epoch CSV belongs to (``<root>/results/<id>``)."""
    path = Path(csv_path)
    m = EPOCH_CSV_RE.match(path.name)
    return Project.at(path.resolve().parent.parent).results_dir(m.group("id")) if m else None


def kept_tables(results: Path | None) -> dict[int, Path]:
    """The epochs whose case tables are kept (the best and the last), and their files."""
    if results is None or not results.is_dir():
        return {}
    return {int(m.group(1)): p for p in results.iterdir() if (m := TABLE_RE.match(p.name))}


def read_case_table(path: Path) -> pd.DataFrame | None:
    """A case table, or None when it is missing or unreadable (an analysis never fails on it)."""
    try:
        table = pd.read_csv(path, dtype={"Case": str})
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return table if "Case" in table.columns else None


def dice_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("Dice_")]


def worst_cases(table: pd.DataFrame, n: int = WORST) -> pd.DataFrame:
    """The ``n`` cases with the lowest mean Dice over their defined classes, worst first (ties:
    case order). Columns: Case, Mean_Dice, the Dice columns."""
    dice = dice_columns(table)
    values = table[dice].to_numpy(dtype=float)
    defined = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(defined.any(axis=1), np.where(defined, values, 0).sum(axis=1) / defined.sum(axis=1), np.nan)
    out = table[["Case"] + dice].assign(Mean_Dice=mean)
    out = out[~np.isnan(mean)].sort_values("Mean_Dice", kind="stable").head(n)
    return out[["Case", "Mean_Dice"] + dice].reset_index(drop=True)


def worst_of_epoch(csv_path: str | os.PathLike, epoch: int | None) -> tuple[int | None, pd.DataFrame | None]:
    """The worst cases of the given epoch's table (the best epoch), else of the last kept one."""
    tables = kept_tables(results_dir_of(csv_path))
    if not tables:
        return None, None
    chosen = epoch if epoch in tables else max(tables)
    table = read_case_table(tables[chosen])
    return (chosen, worst_cases(table)) if table is not None and dice_columns(table) else (None, None)
