"""A sweep's results from its study: one row per trial (``summary.csv``, ``medic.sweep_summary``)
and one figure (``summary.png``): the best monitored value against each parameter, and the
per-epoch curves of the trials overlaid."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medic.store import columns as C
from medic.store.files import write_text_atomic
from medic.sweeps.spec import SweepSpec, default_storage, load_spec, sweep_dir

if TYPE_CHECKING:
    import pandas as pd

STATE_NAMES = {"COMPLETE": "completed", "PRUNED": "pruned", "RUNNING": "running", "WAITING": "queued"}
COLUMNS = ("trial", "status", "run_id")
TAIL_COLUMNS = ("best", "best_epoch", "epochs_done", "time_s", "mode", "notebook")


def trial_rows(spec: SweepSpec, study) -> list[dict[str, Any]]:
    """One row per sweep trial (a retried trial shows as its newest attempt), in trial order."""
    latest: dict[int, Any] = {}
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("unused"):
            continue
        k = t.user_attrs.get("k", t.number)
        if k not in latest or t.number > latest[k].number:
            latest[k] = t
    rows = []
    for k in sorted(latest):
        t = latest[k]
        status = STATE_NAMES.get(t.state.name) or t.user_attrs.get("status") or "failed"
        if status == "failed" and t.user_attrs.get("status") == "stopped":
            status = "stopped"
        values = dict(t.intermediate_values)
        best, best_epoch = None, None
        if values:
            pick = max if spec.direction == "maximize" else min
            best_epoch = pick(values, key=lambda e: values[e])
            best = values[best_epoch]
        start, end = t.datetime_start, t.datetime_complete
        seconds = (end.timestamp() if end else time.time()) - start.timestamp() if start else None
        params = {key: t.params.get(key, (t.system_attrs.get("fixed_params") or {}).get(key)) for key in spec.keys}
        notebook = sweep_dir(".", spec.sweep_id) / f"trial_{k}.ipynb"
        rows.append({"trial": k, "status": status, "run_id": t.user_attrs.get("run_id") or "", **params,
                     "best": best, "best_epoch": best_epoch, "epochs_done": max(values) if values else 0,
                     "time_s": round(seconds, 1) if seconds is not None else None,
                     "mode": t.user_attrs.get("mode", ""), "notebook": str(notebook),
                     **({"job_id": str(t.user_attrs.get("job_id") or "")} if spec.slurm else {})})
    return rows


def summary_frame(spec: SweepSpec, study) -> pd.DataFrame:
    import pandas as pd
    frame = pd.DataFrame(trial_rows(spec, study),
                         columns=[*COLUMNS, *spec.keys, *TAIL_COLUMNS, *(["job_id"] if spec.slurm else [])])
    for column in ("best_epoch", "epochs_done"):
        frame[column] = frame[column].astype("Int64")
    return frame


def summary_figure(spec: SweepSpec, study, frame: pd.DataFrame):
    """The best value against each parameter (log axis for a log distribution), and the curves."""
    from matplotlib.figure import Figure
    keys = spec.keys
    fig = Figure(figsize=(4.0 * (len(keys) + 1), 3.4), layout="constrained")
    axes = fig.subplots(1, len(keys) + 1, squeeze=False)[0]
    colors = {"completed": "tab:blue", "pruned": "tab:orange", "failed": "tab:red", "stopped": "tab:gray",
              "running": "tab:green", "queued": "tab:gray"}
    for ax, key in zip(axes, keys):
        for status, part in frame.groupby("status"):
            shown = part[part["best"].notna()]
            if len(shown):
                ax.scatter([_plain(v) for v in shown[key]], shown["best"].astype(float), label=status,
                           color=colors.get(status, "black"), alpha=0.8)
        if spec.space.get(key, {}).get("kind", "").startswith("log"):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"best {spec.monitor}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    curves = axes[-1]
    by_k = {t.user_attrs.get("k", t.number): t for t in study.get_trials(deepcopy=False)
            if not t.user_attrs.get("unused")}
    for row in frame.itertuples():
        t = by_k.get(row.trial)
        if t is not None and t.intermediate_values:
            epochs = sorted(t.intermediate_values)
            curves.plot(epochs, [t.intermediate_values[e] for e in epochs], marker="o", markersize=3,
                        label=f"trial {row.trial}", alpha=0.9 if row.status == "completed" else 0.5)
    curves.set_xlabel(C.EPOCH)
    curves.set_ylabel(spec.monitor)
    curves.set_title("curves of the trials")
    curves.grid(alpha=0.3)
    if curves.lines:
        curves.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{spec.sweep_id}: {spec.monitor} ({'max' if spec.direction == 'maximize' else 'min'})")
    return fig


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, (str, bool)) else value


def write_summary(root: str | os.PathLike, spec: SweepSpec, study) -> Path:
    """``summary.csv`` and ``summary.png`` in the sweep's folder; returns the CSV's path."""
    folder = sweep_dir(root, spec.sweep_id)
    folder.mkdir(parents=True, exist_ok=True)
    frame = summary_frame(spec, study)
    path = folder / "summary.csv"
    write_text_atomic(path, frame.to_csv(index=False))
    if len(frame) and frame["best"].notna().any():
        from medic.analysis.figures import save_figure, themed
        with themed():
            fig = summary_figure(spec, study, frame)
            save_figure(fig, folder / "summary.png")
    return path


def open_sweep(sweep_id: str, root: str | os.PathLike | None = None, storage: str = ""):
    """(spec, study) of a sweep in the project at ``root``, read-only use."""
    from medic.sweeps.study import load_study
    root = Path(root or os.getcwd())
    spec = load_spec(root, sweep_id, storage)
    return spec, load_study(spec, storage or spec.storage or default_storage(root, sweep_id))


def sweep_summary(sweep_id: str, root: str | os.PathLike | None = None, storage: str = "") -> pd.DataFrame:
    """One row per trial of the sweep: status, run id, each parameter, best value and its epoch,
    epochs done, time."""
    spec, study = open_sweep(sweep_id, root, storage)
    return summary_frame(spec, study)
