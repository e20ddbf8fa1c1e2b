"""The column registry is the one place that knows a column: a column added to it reaches every
view; a per-class HD95 column whose label looks like a maximised metric's name is minimised
everywhere; the console, the live monitor and ``medic watch`` show one ETA."""

from __future__ import annotations

import contextlib
import io
import os
import re

import pytest

from _analysis_helpers import write_run
from _train_helpers import TINY, only_run_id, read_csv, train
from medic.analysis.compare import summary_table
from medic.analysis.figures import comparison_figure, training_figure
from medic.analysis.stats import monitor_of, summarize_epochs, top_epochs
from medic.cli import main
from medic.commands.runs import format_table
from medic.config import TrainConfig
from medic.live import monitor
from medic.live.feed import RunFeed
from medic.live.follow import Follower
from medic.store import columns as C
from medic.store.catalog import load_run, runs
from medic.store.paths import Project
from medic.store.sidecar import write_json_atomic
from medic.train.loop import eta_hours

HD95 = "Val_HD95_Left_Accumbens_area"  # FreeSurfer's Left-Accumbens-area: "acc" in the class name
NEW = "Val_Boundary_Score"


@pytest.fixture
def registered():
    """A column added to the registry: a maximised metric that medic runs summarises."""
    column = C.register(C.Column(NEW, "metric", "max", "", "metrics", "a boundary score",
                                 runs=("boundary", "boundary", "last")))
    yield column
    del C.REGISTRY[NEW]


def run_output(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def test_the_pattern_reads_the_metric_never_the_class_name():
    assert C.direction(HD95) == "min" and C.describe(HD95).family == "per_class"
    assert C.direction("Val_Dice_Left_Accumbens_area") == "max"
    assert C.direction("Val_IoU_Left_Accumbens_area") == "max"  # unknown: IoU decides
    assert C.direction("val_loss_accuracy_weighted") == "min" and C.is_loss("val/loss")
    assert C.direction("Val_Dice_EMA") == "max" and C.direction("Val_HD95_EMA") == "min"
    assert C.direction("Mean_Accuracy") == "max" and C.direction("Val_Error_Rate") == "min"
    assert C.direction(HD95, "max") == "max"  # --monitor_mode overrides
    assert C.describe("Step_Seconds").family == "timing" and C.describe("Host_Memory").family == "memory"
    assert all(C.describe(c).family in C.FAMILIES and C.describe(c).meaning for c in C.REGISTRY)


def test_a_registered_column_reaches_every_view(project, registered, tmp_path):
    run_id = "20250101_000000"
    write_run(project, run_id, epochs=4, batches=2, extra={NEW: lambda e: 0.1 * e, "Val_Dice": lambda e: 0.5})
    epochs = load_run(run_id, root=project).epochs
    # the analysis figure: in the metrics panel, said to be maximised
    panels = {ax.get_title(): [ln.get_label() for ln in ax.get_lines()] for ax in training_figure(epochs).get_axes()}
    assert any(NEW in labels for labels in panels.values()), panels
    assert summarize_epochs(epochs).extras[NEW] == {"final": 0.4, "best": 0.4, "best_epoch": 4, "mode": "max"}
    # the live monitor (headless: its epoch lines and summary)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        mon = monitor(run_id, project, interactive=False, refresh=0.05, min_redraw=0.0)
    assert NEW in mon.feed.extra_columns and f"{NEW} 0.4" in out.getvalue()
    assert float(mon.summary().loc[f"final {NEW}", "value"]) == pytest.approx(0.4)
    # medic watch
    assert f"{NEW} 0.400000" in run_output("watch", "--root", str(project), "--once")
    # medic runs: the summary the registry asks for, in the table and in the CSV
    frame = runs(project)
    assert frame.loc[0, "boundary"] == pytest.approx(0.4)
    assert "boundary" in format_table(frame).splitlines()[0]
    assert "boundary" in run_output("runs", "--root", str(project), "--csv").splitlines()[0]
    # the exports
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run_output("export", "--root", str(project), "--tensorboard", str(tmp_path / "tb"))
    acc = EventAccumulator(str(tmp_path / "tb" / run_id), size_guidance={"scalars": 0})
    acc.Reload()
    assert [p.value for p in acc.Scalars(f"epoch/{NEW}")] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_a_per_class_hd95_with_a_misleading_label_is_minimised_everywhere(project):
    # the trainer's best model, early stopping and plateau schedule, and a sweep's direction all
    # read TrainConfig.monitor_direction
    cfg = TrainConfig(monitor=HD95, val_fraction=0.25, val_metrics="dice,hd95").validate()
    assert cfg.monitor_direction == "min"
    # a run that recorded no monitor_mode: the views fall back on the registry
    hd95 = {1: 9.0, 2: 3.0, 3: 5.0, 4: 4.0}
    write_run(project, "20250101_000000", epochs=4, extra={HD95: hd95.get, "Val_Dice": lambda e: 0.5})
    write_run(project, "20250101_000001", epochs=4, extra={HD95: lambda e: hd95[e] + 1, "Val_Dice": lambda e: 0.5})
    for rid in ("20250101_000000", "20250101_000001"):
        side = project / "metrics" / f"run_{rid}.json"
        record = __import__("json").loads(side.read_text())
        record.pop("monitor_mode")
        record["monitor"] = record["config"]["monitor"] = HD95
        write_json_atomic(side, record)
    run = load_run("20250101_000000", root=project)
    assert monitor_of(run.epochs, run.sidecar) == (HD95, "min")
    summary = summarize_epochs(run.epochs, run.sidecar)
    assert (summary.best_monitored, summary.best_monitored_epoch) == (3.0, 2)
    assert list(top_epochs(run.epochs, HD95, "min")["Epoch"]) == [2, 4, 3, 1]
    feed = RunFeed(run.run_id, Project.at(project))
    feed.poll()
    assert feed.monitor_mode == "min"
    table = summary_table([run, load_run("20250101_000001", root=project)], [HD95])
    assert list(table[f"best_{HD95}"]) == [3.0, 4.0] and list(table["best_monitored_epoch"]) == [2, 2]
    fig = comparison_figure([("a", run.epochs)], [HD95])
    assert fig.get_axes()[0].get_title() == f"{HD95} vs Epoch (lower is better)"
    report = run_output("analyze", "--root", str(project), "--run", run.run_id, "--lang", "en")
    assert f"Top 4 epochs (by {HD95}, lower is better):" in report
    assert f"1. Epoch 2: {HD95}=3.000000" in report


def test_the_console_the_live_monitor_and_watch_show_one_eta(tmp_path):
    planned = 4
    proc = train(tmp_path, *TINY, "--epochs", str(planned), "--lang", "en")
    run_id = only_run_id(tmp_path)
    shown = re.findall(r"^Estimated time remaining: (\d+\.\d{2}) h$", proc.stdout, re.M)
    _, rows = read_csv(tmp_path / "metrics" / f"epoch_metrics_{run_id}.csv")
    times = [float(r["Epoch_Time_Seconds"]) for r in rows]
    assert len(shown) == planned and shown[-1] == "0.00"  # every epoch; none left after the last
    # replay the run a row at a time, as a run in progress, to the monitor and to watch
    project = Project.at(tmp_path / "replay")
    project.metrics.mkdir(parents=True)
    header = ",".join(rows[0]) + "\n"
    for k in range(1, planned):
        eta = C.eta_seconds(times[:k], planned - k)
        assert shown[k - 1] == f"{eta / 3600:.2f}" and eta_hours(times[:k], planned - k) * 3600 == pytest.approx(eta)
        project.epoch_csv(run_id).write_text(header + "".join(",".join(r.values()) + "\n" for r in rows[:k]))
        write_json_atomic(project.sidecar(run_id), {"run_id": run_id, "status": "running", "pid": os.getpid(),
                                                    "epochs": planned, "monitor": "Avg_Loss"})
        feed = RunFeed(run_id, project)
        feed.poll()
        assert feed.progress("running").eta_seconds == pytest.approx(eta, abs=1e-9)
        out = io.StringIO()
        follower = Follower(project.epoch_csv(run_id), run_id, "en", out)
        follower.poll(follower.sidecar())
        assert out.getvalue().rstrip().endswith(f"ETA {C.format_duration(eta)}")


def test_one_duration_and_the_same_statistic_in_every_view(project):
    run_id = "20250101_000000"
    write_run(project, run_id, epochs=4, batches=3, epoch_time=20.0, extra={"Val_Dice": lambda e: 0.5})
    run = load_run(run_id, root=project)
    seconds = C.training_seconds(run.epochs["Epoch_Time_Seconds"])
    shown = C.format_duration(seconds)
    assert seconds == pytest.approx(81.0) and shown == "1m 21s"
    # the report, medic runs, the live monitor's summary and compare: one number, one rendering
    report = run_output("analyze", "--root", str(project), "--run", run_id, "--lang", "en")
    assert f"Total training time: 0.02 hours ({shown})" in report
    assert f" {shown} " in format_table(runs(project)).splitlines()[1]
    with contextlib.redirect_stdout(io.StringIO()):
        mon = monitor(run_id, project, interactive=False, refresh=0.05, min_redraw=0.0)
    assert mon.summary().loc["training time", "value"] == shown
    second = load_run(run_id, root=project)
    assert list(summary_table([run, second])["total_time_s"]) == [seconds, seconds]
    # the batch report's per-epoch statistics are pandas' own (std with ddof=1), and its mean says
    # it weighs batches, not samples
    batches = run_output("analyze", "--root", str(project), "--run", run_id, "--batch_metrics", "--lang", "en")
    by_epoch = run.batches.groupby("Epoch")["Loss"].describe()
    noisy = by_epoch["std"].idxmax()
    assert (f"Epoch {noisy}: mean {by_epoch.loc[noisy, 'mean']:.6f}, std {by_epoch.loc[noisy, 'std']:.6f} "
            "(ddof=1, as pandas)") in batches
    assert "Mean (every logged batch counts once; Avg_Loss weights every sample)" in batches
