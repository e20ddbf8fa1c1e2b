"""The per-case results a paired comparison reads, whatever made them:

    a run               results/<id>/validation_epoch_N.csv, the last or the best epoch's
    a cross-validation  analysis/cv/cv_<timestamp>/: every fold run's table, pooled
    an evaluation       analysis/evaluations/eval_<timestamp>/cases.csv (``medic evaluate``)
    a file              any per-case table (a ``Case`` column, one row per case)

and whether two of them can be paired: the same data (their fingerprints, when both record
one of the same kind) and the same cases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from medic.analysis.cases import kept_tables, read_case_table
from medic.errors import MedicError, RunNotFoundError
from medic.store.paths import RUN_ID_RE, Project
from medic.store.sidecar import read_sidecar

if TYPE_CHECKING:
    import pandas as pd

CV_DIR = ("analysis", "cv")
EVAL_DIR = ("analysis", "evaluations")
CV_RECORD, EVAL_RECORD, CASES_CSV = "cv.json", "evaluation.json", "cases.csv"


@dataclass
class CaseSource:
    """One side of a paired comparison."""

    label: str                      # how it is named in messages and tables
    table: pd.DataFrame             # Case + the per-case metric columns
    cases: list[str] = field(default_factory=list)  # the cases it validated (or evaluated)
    fingerprint: tuple[str, str] | None = None      # (what it fingerprints, the value)
    epoch: int | None = None        # the run's epoch whose table this is


def load_cases(spec: str | os.PathLike, root: str | os.PathLike | None = None, epoch: str = "last") -> CaseSource:
    """The per-case results named by ``spec``: a run id or ``latest``, ``cv_<timestamp>``,
    ``eval_<timestamp>``, or a path (a per-case CSV, or a cross-validation's or evaluation's folder)."""
    project = Project.at(root)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if text.startswith("cv_") and not path.exists():
        path = project.root.joinpath(*CV_DIR, text)
    elif text.startswith("eval_") and not path.exists():
        path = project.root.joinpath(*EVAL_DIR, text)
    elif text == "latest" or RUN_ID_RE.fullmatch(text):
        return run_cases(project, newest_validated(project) if text == "latest" else text, epoch)
    if path.is_dir() and (path / CV_RECORD).is_file():
        return cv_cases(path, epoch)
    if path.is_dir():
        path = path / CASES_CSV
    if not path.is_file():
        raise RunNotFoundError(f"{text}: no such run, cross-validation, evaluation or per-case table")
    return file_cases(path)


def file_cases(path: Path) -> CaseSource:
    """A per-case CSV; an evaluation's record beside it gives the truth's fingerprint."""
    table = read_case_table(path)
    if table is None:
        raise MedicError(f"{path} is not a per-case table (no Case column)")
    record = read_sidecar(path.parent / EVAL_RECORD) or {}
    fp = record.get("truth_fingerprint")
    label = path.parent.name if path.name == CASES_CSV else path.name
    return CaseSource(label, table, table["Case"].tolist(), ("truth", str(fp)) if fp else None)


def newest_validated(project: Project) -> str:
    ids = [i for i in project.run_ids() if kept_tables(project.results_dir(i))]
    if not ids:
        raise RunNotFoundError(f"no run in {project.root} has per-case tables (train with validation)")
    return ids[-1]


def run_epoch(project: Project, run_id: str, epoch: str) -> tuple[int, Path]:
    """The epoch and file of a run's last or best per-case table."""
    tables = kept_tables(project.results_dir(run_id))
    if not tables:
        known = project.epoch_csv(run_id).exists() or project.sidecar(run_id).exists()
        raise (MedicError if known else RunNotFoundError)(
            f"run {run_id} has no per-case tables (results/{run_id}/validation_epoch_N.csv)" if known else
            f"no such run: {run_id}")
    if epoch == "last":
        return max(tables), tables[max(tables)]
    best = (read_sidecar(project.sidecar(run_id)) or {}).get("best_epoch")
    if best is None:  # no record: the kept tables are the best epoch's and the last one's
        best = min(tables)
    if best not in tables:
        raise MedicError(f"run {run_id} kept no per-case table of its best epoch {best} "
                         f"(kept: {', '.join(map(str, sorted(tables)))}): use --epoch last")
    return best, tables[best]


def run_cases(project: Project, run_id: str, epoch: str = "last") -> CaseSource:
    """A run's per-case table of its last or best epoch, with the cases and the data fingerprint
    its record names (when it has them)."""
    at, path = run_epoch(project, run_id, epoch)
    table = read_case_table(path)
    if table is None:
        raise MedicError(f"run {run_id}: {path} cannot be read as a per-case table")
    side = read_sidecar(project.sidecar(run_id)) or {}
    cases = side.get("val_cases")
    cases = [str(c) for c in cases] if isinstance(cases, list) else table["Case"].tolist()
    fp = side.get("data_fingerprint")
    return CaseSource(run_id, table, cases, ("data", str(fp)) if fp else None, at)


def check_pairable(a: CaseSource, b: CaseSource) -> None:
    """Refuse two sources of different data or different cases, with one line that says how."""
    if a.fingerprint and b.fingerprint and a.fingerprint[0] == b.fingerprint[0] and a.fingerprint != b.fingerprint:
        raise MedicError(f"{a.label} and {b.label} were made on different data (their {a.fingerprint[0]} "
                         f"fingerprints differ: {a.fingerprint[1][:12]} and {b.fingerprint[1][:12]})")
    for s in (a, b):
        dup = s.table["Case"][s.table["Case"].duplicated()].tolist()
        if dup:
            raise MedicError(f"{s.label}: case {dup[0]} appears more than once in its per-case table")
    for left, right in ((a.cases, b.cases), (a.table["Case"].tolist(), b.table["Case"].tolist())):
        only_a, only_b = set(left) - set(right), set(right) - set(left)
        if only_a or only_b:
            example = sorted(only_a or only_b)[0]
            raise MedicError(f"{a.label} and {b.label} validated different cases: {len(only_a)} of "
                             f"{a.label}'s {len(set(left))} are not in {b.label}'s, {len(only_b)} of "
                             f"{b.label}'s {len(set(right))} not in {a.label}'s (e.g. {example})")


def pooled_cases(project: Project, run_ids: Sequence[str], epoch: str = "last") -> tuple[pd.DataFrame, list]:
    """Every fold run's per-case table of ``epoch``, one row per case with its ``Fold``; and
    the folds' data fingerprints. A case validated by two folds is refused."""
    import pandas as pd
    parts, prints = [], []
    for fold, run_id in enumerate(run_ids):
        source = run_cases(project, run_id, epoch)
        parts.append(source.table.assign(Fold=fold))
        prints.append(source.fingerprint)
    pooled = pd.concat(parts, ignore_index=True)
    twice = pooled["Case"][pooled["Case"].duplicated()].tolist()
    if twice:
        raise MedicError(f"case {twice[0]} is validated by more than one fold: the runs are not one "
                         f"cross-validation's folds")
    cols = ["Case", "Fold"] + [c for c in pooled.columns if c not in ("Case", "Fold")]
    return pooled[cols], prints


def cv_cases(folder: Path, epoch: str = "last") -> CaseSource:
    """A cross-validation as one side of a paired comparison: its fold runs' tables of
    ``epoch``, pooled (the stored ``cases.csv`` when the runs are gone and it is of that epoch)."""
    import pandas as pd
    record = read_sidecar(folder / CV_RECORD)
    if record is None:
        raise MedicError(f"{folder / CV_RECORD} cannot be read")
    runs = [str(r) for r in record.get("runs") or []]
    project = Project.at(folder.parent.parent.parent)
    fingerprint = record.get("data_fingerprint")
    fp = ("data", str(fingerprint)) if fingerprint else None
    if runs and all(project.results_dir(r).is_dir() for r in runs):
        pooled, _ = pooled_cases(project, runs, epoch)
    elif record.get("epoch") == epoch and (folder / CASES_CSV).is_file():
        pooled = pd.read_csv(folder / CASES_CSV, dtype={"Case": str})
    else:
        raise MedicError(f"{folder.name}: its fold runs' per-case tables are gone and its cases.csv "
                         f"is of the {record.get('epoch')} epoch: use --epoch {record.get('epoch')}")
    return CaseSource(folder.name, pooled, pooled["Case"].tolist(), fp)
