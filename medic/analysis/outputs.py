"""Analysing a run's CSV into files: read, compute, draw, then write ``analysis/``.

This sits on top of the statistics, figures and report, which only return objects:

    paths, text = analyze_epochs("metrics/epoch_metrics_20251106_103015.csv")
    paths, text = analyze_batches("metrics/batch_metrics_20251106_103015.csv")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medic.analysis.cases import worst_of_epoch
from medic.analysis.figures import batch_figure, preload, run_title, save_figure, stats_figure, training_figure
from medic.analysis.report import batch_report, training_report
from medic.analysis.batches import analyze_batch_file
from medic.analysis.stats import summarize_epochs
from medic.store.catalog import load_run
from medic.store.files import write_text_atomic
from medic.store.paths import BATCH_CSV_RE, EPOCH_CSV_RE, Project
from medic.store.readers import read_epoch_csv
from medic.store.sidecar import read_sidecar
from medic.store.status import run_status


def sidecar_for(csv_path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of the run a metrics CSV belongs to, when it sits next to it."""
    path = Path(csv_path)
    m = EPOCH_CSV_RE.match(path.name) or BATCH_CSV_RE.match(path.name)
    return read_sidecar(path.with_name(f"run_{m.group('id')}.json")) if m else None


def output_paths(project: Project, csv_path: str | os.PathLike, kind: str) -> dict[str, Path]:
    """Where the analysis of ``csv_path`` goes (the names of docs/reference/files.md)."""
    stem = Path(csv_path).stem
    if kind == "batch":
        return {"figure": project.analysis / f"batch_analysis_{stem}.png",
                "report": project.analysis / f"batch_report_{stem}.txt"}
    return {"figure": project.analysis / f"training_analysis_{stem}.png",
            "stats": project.analysis / f"training_stats_{stem}.png",
            "report": project.analysis / f"training_report_{stem}.txt"}


def write_outputs(paths: dict[str, Path], figures: dict, text: str) -> None:
    """The figures (by their key in ``paths``) and the report, each written atomically."""
    paths["report"].parent.mkdir(parents=True, exist_ok=True)
    for key, fig in figures.items():
        save_figure(fig, paths[key])
    write_text_atomic(paths["report"], text)


def analyze_epochs(csv_path: str | os.PathLike, root: str | os.PathLike | None = None,
                   lang: str | None = None) -> tuple[dict[str, Path], str]:
    """Write the two figures and the text report of an epoch CSV into ``<root>/analysis``.

    Everything is read and drawn before the first file is written, so bad input writes
    nothing. Returns the written paths and the report text.
    """

    epochs = read_epoch_csv(csv_path)
    sidecar = sidecar_for(csv_path)
    m = EPOCH_CSV_RE.match(Path(csv_path).name)
    status = run_status(Project(Path(csv_path).resolve().parent.parent), m.group("id"), sidecar) \
        if sidecar and m else None
    summary = summarize_epochs(epochs, sidecar, status)
    summary.message = str((sidecar or {}).get("message") or "")
    summary.worst_epoch, summary.worst_cases = worst_of_epoch(csv_path, summary.best_monitored_epoch)
    text = training_report(summary, csv_path, lang)
    title = run_title(csv_path)  # every figure names its run
    main_fig = training_figure(epochs, monitor=(summary.monitor, summary.monitor_mode),
                               title=f"{title}: training analysis")
    stats_fig = stats_figure(epochs, title=f"{title}: loss statistics")
    paths = output_paths(Project.at(root), csv_path, "epoch")
    write_outputs(paths, {"figure": main_fig, "stats": stats_fig}, text)
    return paths, text


def analyze_batches(csv_path: str | os.PathLike, root: str | os.PathLike | None = None,
                    lang: str | None = None) -> tuple[dict[str, Path], str]:
    """Write the batch figure and report of a batch CSV into ``<root>/analysis``."""

    project = Project.at(root)
    loading = preload()  # matplotlib's imports overlap the parse
    result = analyze_batch_file(csv_path, cache_dir=project.analysis / ".cache")
    text = batch_report(result, lang)
    loading.join()
    fig = batch_figure(result)
    paths = output_paths(project, csv_path, "batch")
    write_outputs(paths, {"figure": fig}, text)
    return paths, text


def analyze_run(run, root: str | os.PathLike | None = None,
                batch: bool = True) -> tuple[list[tuple[str, bytes]], str]:
    """``medic analyze`` (and ``--batch_metrics`` when the run logged batches) for a run (an id or
    a ``Run``): the files go to ``<root>/analysis`` as usual; returns the figures as (file name,
    PNG bytes) and the report text (for notebooks and the live monitor)."""
    if isinstance(run, str):
        run = load_run(run, root=root)
    paths, report = analyze_epochs(run.paths["epoch_csv"], root=root)
    figures = [paths["figure"], paths["stats"]]
    if batch and "batch_csv" in run.paths:
        batch_paths, batch_text = analyze_batches(run.paths["batch_csv"], root=root)
        figures.append(batch_paths["figure"])
        report += "\n\n" + batch_text
    return [(p.name, p.read_bytes()) for p in figures], report
