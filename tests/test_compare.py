"""medic compare: overlaid curves against epoch and wall time, legends from differing options,
the summary table (CSV and text), and its errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _analysis_helpers import cli, files_under, write_run

from medic.analysis.compare import compare_runs
from medic.commands.compare import comparison_name


@pytest.fixture
def two_runs(project):
    write_run(project, "20250101_000001", epochs=4, config={"lr": 0.001}, extra={"Val_Dice": lambda e: 0.1 * e},
              epoch_time=2.0)
    write_run(project, "20250101_000002", epochs=6, config={"lr": 0.01}, loss0=0.8,
              extra={"Val_Dice": lambda e: 0.12 * e, "Val_Loss": lambda e: 1.0 / e}, epoch_time=100.0)
    return project


def test_compare_runs_figure_and_table(two_runs):
    fig, table = compare_runs(["20250101_000001", "20250101_000002"], root=two_runs)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["Avg_Loss vs Epoch (lower is better)", "Avg_Loss vs Wall Time",
                                               "Val_Dice vs Epoch (higher is better)", "Val_Dice vs Wall Time"]
    labels = ["20250101_000001 (epochs=4, lr=0.001)", "20250101_000002 (epochs=6, lr=0.01)"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == labels
    frames = [pd.read_csv(two_runs / "metrics" / f"epoch_metrics_20250101_00000{k}.csv") for k in (1, 2)]
    total = max(f["Epoch_Time_Seconds"].sum() for f in frames)
    scale = 60.0 if total >= 120 else 1.0
    assert axes[1].get_xlabel() == "Training time (minutes)"
    for line, frame in zip(axes[0].get_lines(), frames):
        np.testing.assert_allclose(line.get_xdata(), frame["Epoch"])
        np.testing.assert_allclose(line.get_ydata(), frame["Avg_Loss"])
    for line, frame in zip(axes[1].get_lines(), frames):
        np.testing.assert_allclose(line.get_xdata(), frame["Epoch_Time_Seconds"].cumsum() / scale)
    for line, frame in zip(axes[2].get_lines(), frames):
        np.testing.assert_allclose(line.get_ydata(), frame["Val_Dice"])
    assert list(table["run_id"]) == ["20250101_000001", "20250101_000002"]
    first, second = table.iloc[0], table.iloc[1]
    assert first["epochs_done"] == 4 and second["epochs_done"] == 6
    assert first["best_Avg_Loss"] == pytest.approx(frames[0]["Avg_Loss"].min())
    assert first["best_Avg_Loss_epoch"] == 4 and second["best_Val_Dice_epoch"] == 6
    assert second["best_Val_Dice"] == pytest.approx(0.72)
    assert first["total_time_s"] == pytest.approx(frames[0]["Epoch_Time_Seconds"].sum())
    assert second["time_per_epoch_s"] == pytest.approx(frames[1]["Epoch_Time_Seconds"].mean(), abs=1e-3)
    assert list(table["lr"]) == [0.001, 0.01]
    assert "Val_Loss" not in " ".join(table.columns)  # only the metrics both runs have


def test_cli_default_two_newest_and_files(two_runs):
    write_run(two_runs, "20240101_000000", epochs=2)  # older: not part of the default pair
    out = cli("compare", cwd=two_runs)
    assert out.returncode == 0, out.stderr
    name = comparison_name(["20250101_000001", "20250101_000002"])
    assert name == "comparison_20250101_000001_vs_20250101_000002"
    assert files_under(two_runs / "analysis") == [f"{name}.csv", f"{name}.png", f"{name}.txt"]
    table = pd.read_csv(two_runs / "analysis" / f"{name}.csv")
    assert table["run_id"].astype(str).tolist() == ["20250101_000001", "20250101_000002"]
    assert {"best_Avg_Loss", "best_Avg_Loss_epoch", "epochs_done", "total_time_s", "time_per_epoch_s"} <= set(table)
    text = (two_runs / "analysis" / f"{name}.txt").read_text()
    assert "20250101_000002 (epochs=6, lr=0.01)" in text and "best_Avg_Loss" in text
    assert f"analysis/{name}.png" in out.stdout
    # three runs, one given as a file path
    path = two_runs / "metrics" / "epoch_metrics_20240101_000000.csv"
    out = cli("compare", str(path), "20250101_000001", "20250101_000002", cwd=two_runs)
    assert out.returncode == 0, out.stderr
    assert (two_runs / "analysis" / "comparison_20240101_000000_vs_20250101_000001_vs_20250101_000002.png").exists()


@pytest.mark.parametrize("args, expected", [
    (["20250101_000001", "20250101_000001"], "the same run is given twice"),
    (["20250101_000001", "20300101_000000"], "no such run"),
    (["20250101_000001"], "at least two runs"),
])
def test_cli_errors(two_runs, args, expected):
    out = cli("compare", *args, cwd=two_runs)
    assert out.returncode == 2 and expected in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert files_under(two_runs / "analysis") == []


def test_cli_needs_two_runs(project):
    write_run(project, "20250101_000001", epochs=2)
    out = cli("compare", cwd=project)
    assert out.returncode == 2 and "only one run" in out.stderr
