"""Comparing runs: the overlaid curves and the summary table (``medic compare`` writes them).

Legends name each run by the options that differ between the runs. In a notebook:

    fig, table = medic.compare_runs(["20251106_103015", "20251107_091200"])
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

from medic.config import PATH_OPTIONS
from medic.errors import MedicError
from medic.store import columns as C
from medic.store.catalog import Run, differing_options, load_run, no_runs_error
from medic.store.files import shown_path
from medic.store.paths import Project

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

MAX_METRIC_ROWS = 4  # Avg_Loss plus up to three shared extra metrics
# options that change how a run is recorded or where it runs, never the curves: left out of the
# legend (the table still lists every option that differs)
NOT_SHAPING = ("log_interval", "log_batch_metrics", "save_interval", "save_top_k", "dist_timeout",
               "cache_rate", "cache_dir", "device")


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def run_labels(runs: Sequence[Run]) -> list[str]:
    """``<run id> (lr=0.001, batch_size=4)``: each run named by the options that differ and
    shape the result (not how it was logged, saved or where it ran)."""
    keys = [k for k in differing_options([r.config for r in runs]) if k not in NOT_SHAPING] if len(runs) > 1 else []
    labels = []
    for r in runs:
        opts = ", ".join(f"{k}={shown_path(r.config[k]) if k in PATH_OPTIONS else _value(r.config[k])}"
                         for k in keys[:4] if k in r.config)
        labels.append(f"{r.run_id} ({opts})" if opts else r.run_id)
    return labels


def shared_metrics(runs: Sequence[Run]) -> list[str]:
    """Avg_Loss and the extra numeric metrics every run has, in the first run's order."""
    from medic.store.columns import per_class_prefix
    from medic.analysis.stats import extra_metrics
    shared = [c for c in extra_metrics(runs[0].epochs) if all(c in extra_metrics(r.epochs) for r in runs[1:])
              and per_class_prefix(c) is None]  # per-class Dice: one panel of its own
    return ([C.AVG_LOSS] + shared)[:MAX_METRIC_ROWS]


def summary_table(runs: Sequence[Run], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run: epochs, the metric it selects its best model by (``monitor``) with its
    best value and epoch, the best of each metric and its epoch (in the metric's direction: the
    run's ``--monitor_mode`` for its monitor, the registry's for the rest), final loss, training
    time (the sum of the epoch times) and time per epoch, then the options that differ."""
    import pandas as pd

    from medic.analysis.stats import best_of, monitor_of

    metrics = list(metrics or shared_metrics(runs))
    keys = differing_options([r.config for r in runs]) if len(runs) > 1 else []
    rows = []
    for r in runs:
        e = r.epochs
        times = e[C.EPOCH_TIME]
        row = {"run_id": r.run_id, "status": r.status, "epochs_done": int(e[C.EPOCH].iloc[-1])}
        monitor, mode = monitor_of(e, r.sidecar)
        row["monitor"] = monitor
        row["best_monitored"], row["best_monitored_epoch"] = best_of(e[monitor], e[C.EPOCH], mode)
        for m in metrics:
            value, at = best_of(e[m], e[C.EPOCH], mode if m == monitor else C.direction(m))
            row[f"best_{m}"], row[f"best_{m}_epoch"] = value, at
        row.update(final_Avg_Loss=float(e[C.AVG_LOSS].iloc[-1]), total_time_s=round(C.training_seconds(times), 2),
                   time_per_epoch_s=round(float(times.mean()), 3))
        row.update({k: r.config.get(k) for k in keys if k not in row})
        rows.append(row)
    table = pd.DataFrame(rows)
    for m in ["monitored", *metrics]:
        table[f"best_{m}_epoch"] = table[f"best_{m}_epoch"].astype("Int64")
    return table


def load_comparable(spec: str | os.PathLike | Run, root) -> Run:
    run = spec if isinstance(spec, Run) else load_run(spec, root)
    if run.epochs.empty:
        raise MedicError(f"run {run.run_id} has no complete epoch yet: nothing to compare")
    return run


def compare_runs(specs: Sequence[str | os.PathLike | Run] | None = None,
                 root: str | os.PathLike | None = None) -> tuple[Figure, pd.DataFrame]:
    """The comparison figure and summary table of several runs.

    The figure overlays Avg_Loss and every extra metric the runs share, against epoch and against
    wall time; the legend names each run by the options that differ between them.

    Args:
        specs: the runs, each a run id, an epoch CSV path or a ``Run``; default: the two newest
            runs of the project.
        root: the project root (default: the working directory).

    Returns:
        ``(figure, table)``: a matplotlib ``Figure`` and a DataFrame with one row per run (epochs
        done, best value of each metric and its epoch, final loss, times, the differing options).

    Raises:
        MedicError: fewer than two runs, the same run twice, or a run that cannot be read.

    Example::

        import medic

        figure, table = medic.compare_runs(["20251106_103015", "20251107_091500"])
        figure.savefig("comparison.png")
    """
    from medic.analysis.figures import comparison_figure

    runs = [load_comparable(s, root) for s in (specs or default_runs(Project.at(root)))]
    if len(runs) < 2:
        raise MedicError("compare needs at least two runs")
    ids = [r.run_id for r in runs]
    if len(set(ids)) < len(ids):
        raise MedicError(f"the same run is given twice: {', '.join(ids)}")
    metrics = shared_metrics(runs)
    fig = comparison_figure(list(zip(run_labels(runs), [r.epochs for r in runs])), metrics)
    return fig, summary_table(runs, with_per_class(runs, metrics))


def with_per_class(runs: Sequence[Run], metrics: list[str]) -> list[str]:
    """The table's metrics: the overlaid ones, then the per-class Dice columns all runs share
    (the figure draws those in a panel of their own)."""
    from medic.analysis.perclass import shared_per_class_dice
    return metrics + [c for c in shared_per_class_dice([r.epochs for r in runs]) if c not in metrics]


def default_runs(project: Project) -> list[str]:
    ids = [i for i in project.run_ids() if project.epoch_csv(i).exists()]
    if len(ids) < 2:
        if not ids:
            raise no_runs_error(project)
        raise MedicError(f"only one run in {project.metrics} ({ids[0]}): give two runs to compare")
    return ids[-2:]
