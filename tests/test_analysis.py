"""medic analyze: figures (panel titles and plotted data), reports (every field the files reference
lists, en/zh), batch analysis (spikes, non-finite values, downsampling), tolerant reading, and bad input through
the real CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from _analysis_helpers import bench, cli, copy_real, files_under, write_run
from conftest import PY, child_env

from medic import analysis

from medic.commands import analyze

from medic.analysis import figures, report
from medic.store.catalog import load_run
from medic.store.readers import read_batch_arrays, read_epoch_csv

EPOCH_PANELS = ["Training Loss Curve", "Loss Range", "Learning Rate Schedule", "Time per Epoch"]


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def band_y(collection) -> np.ndarray:
    return np.concatenate([p.vertices[:, 1] for p in collection.get_paths()])


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return copy_real(tmp_path_factory, tmp_path_factory.mktemp("analysis") / "project")


def test_cli_on_a_real_run_writes_spec_files_and_every_report_field(real):
    proc = cli("analyze", cwd=real)
    assert proc.returncode == 0, proc.stderr
    run = load_run("latest", root=real)
    stem = f"epoch_metrics_{run.run_id}"
    assert files_under(real / "analysis") == sorted(
        [f"training_analysis_{stem}.png", f"training_stats_{stem}.png", f"training_report_{stem}.txt"])
    text = (real / "analysis" / f"training_report_{stem}.txt").read_text()
    e = run.epochs
    loss = e["Avg_Loss"]
    best = int(e.loc[loss.idxmin(), "Epoch"])
    for expected in [f"Data file: metrics/{stem}.csv", "Generated: ", "Total epochs: 3",
                     f"Total training time: {e['Epoch_Time_Seconds'].sum() / 3600:.2f} hours",
                     f"Mean time per epoch: {e['Epoch_Time_Seconds'].mean():.2f} s",
                     f"Initial loss: {loss.iloc[0]:.6f}", f"Final loss: {loss.iloc[-1]:.6f}",
                     f"Best loss: {loss.min():.6f} (Epoch {best})",
                     f"Loss improvement: {loss.iloc[0] - loss.iloc[-1]:.6f} "
                     f"({(loss.iloc[0] - loss.iloc[-1]) / loss.iloc[0] * 100:.2f}%)",
                     f"Initial learning rate: {e['Learning_Rate'].iloc[0]:.8f}",
                     f"Final learning rate: {e['Learning_Rate'].iloc[-1]:.8f}",
                     f"1. Epoch {best}: Loss={loss.min():.6f}, LR=", "Val_Loss: final", "Val_Dice: final"]:
        assert expected in text, (expected, text)
    assert len([ln for ln in text.splitlines() if ln.strip()[:2] in ("1.", "2.", "3.")]) == 3
    assert f"analysis/training_analysis_{stem}.png" in proc.stdout
    assert text in proc.stdout  # the report is printed too


def test_real_run_figures_plot_the_csv_columns(real):
    run = load_run("latest", root=real)
    e = run.epochs
    fig = figures.training_figure(e)
    axes = fig.get_axes()
    # the timing panel's throughput axis is a twin without a title of its own; Val_Dice is drawn
    # once, as the mean in the per-class Dice panel (no Validation Metrics panel repeating it)
    assert [ax.get_title() for ax in axes] == EPOCH_PANELS + ["Per-class Dice", "Where the time goes", ""]
    per_class = lines_by_label(axes[len(EPOCH_PANELS)])
    np.testing.assert_allclose(per_class["class_1"].get_ydata(), e["Val_Dice_class_1"])
    np.testing.assert_allclose(per_class["Val_Dice (mean)"].get_ydata(), e["Val_Dice"])
    loss_lines = lines_by_label(axes[0])
    np.testing.assert_allclose(loss_lines["Avg_Loss"].get_ydata(), e["Avg_Loss"])
    np.testing.assert_allclose(loss_lines["Avg_Loss"].get_xdata(), e["Epoch"])
    np.testing.assert_allclose(loss_lines["Val_Loss"].get_ydata(), e["Val_Loss"])
    np.testing.assert_allclose(loss_lines["Best_Loss_So_Far"].get_ydata(), e["Best_Loss_So_Far"])
    y = band_y(axes[1].collections[0])
    assert np.isclose(y.min(), e["Min_Batch_Loss"].min()) and np.isclose(y.max(), e["Max_Batch_Loss"].max())
    np.testing.assert_allclose(lines_by_label(axes[2])["Learning_Rate"].get_ydata(), e["Learning_Rate"])
    np.testing.assert_allclose(lines_by_label(axes[3])["Epoch_Time_Seconds"].get_ydata(), e["Epoch_Time_Seconds"])

    stats = figures.stats_figure(e).get_axes()
    assert [ax.get_title() for ax in stats] == ["Loss Improvement per Epoch", "Batch Loss Stability"]
    heights = [p.get_height() for p in stats[0].patches]
    np.testing.assert_allclose(heights, -np.diff(e["Avg_Loss"]))
    spread = lines_by_label(stats[1])["max − min batch loss"].get_ydata()
    np.testing.assert_allclose(spread, e["Max_Batch_Loss"] - e["Min_Batch_Loss"])


def test_batch_analysis_of_a_real_run(real, capsys):
    assert analyze.main(["--batch_metrics", "--quiet", "--root", str(real)]) == 0
    assert "batch_analysis_batch_metrics_" in capsys.readouterr().out
    run = load_run("latest", root=real)
    stem = f"batch_metrics_{run.run_id}"
    assert {f"batch_analysis_{stem}.png", f"batch_report_{stem}.txt"} <= set(files_under(real / "analysis"))
    text = (real / "analysis" / f"batch_report_{stem}.txt").read_text()
    assert f"Batches: {len(run.batches)}" in text and "Non-finite losses (NaN/Inf): none" in text
    result = analysis.analyze_batch_file(run.paths["batch_csv"])
    axes = figures.batch_figure(result).get_axes()
    assert [ax.get_title() for ax in axes] == ["Loss per Batch", "Per-Epoch Spread", "Learning Rate per Batch"]
    np.testing.assert_allclose(lines_by_label(axes[0])["batch loss"].get_ydata(), run.batches["Loss"], rtol=1e-6)
    per = run.batches.groupby("Epoch")["Loss"]
    np.testing.assert_allclose(lines_by_label(axes[1])["mean"].get_ydata(), per.mean(), rtol=1e-6)
    np.testing.assert_allclose(result.per_epoch["Min"], per.min(), rtol=1e-6)
    np.testing.assert_allclose(result.per_epoch["Max"], per.max(), rtol=1e-6)
    # the batch averages agree with what the epoch CSV says about the same epochs
    np.testing.assert_allclose(result.per_epoch["Min"], run.epochs["Min_Batch_Loss"], atol=1e-6)


def test_chinese_report_from_the_locale(real, monkeypatch, capsys):
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    monkeypatch.chdir(real)
    assert analyze.main(["-q"]) == 0
    run_id = load_run("latest", root=real).run_id
    text = (real / "analysis" / f"training_report_epoch_metrics_{run_id}.txt").read_text()
    for heading in ["训练分析报告", "数据文件:", "生成时间:", "训练概览:", "总Epoch数: 3", "总训练时间:", "小时",
                    "平均每Epoch时间:", "Loss统计:", "初始Loss:", "最终Loss:", "最佳Loss:", "Loss改善:",
                    "学习率:", "初始学习率:", "最终学习率:", "Top 3最佳Epochs (按 ", ": Loss=", ", LR="]:
        assert heading in text, heading
    assert "分析报告已保存" in capsys.readouterr().out


def test_monitored_dice_best_model_and_partial_last_line(project):
    write_run(project, "20250101_000001", epochs=6, monitor="Val_Dice",
              extra={"Val_Loss": lambda e: 1.0 / e, "Val_Dice": lambda e: [0.5, 0.7, 0.6, 0.8, 0.75, 0.72][e - 1]})
    csv = project / "metrics" / "epoch_metrics_20250101_000001.csv"
    with open(csv, "a") as f:
        f.write("7,0.1,0.0")  # a row cut short by a kill: ignored, not an error
    epochs = read_epoch_csv(csv)
    assert list(epochs["Epoch"]) == [1, 2, 3, 4, 5, 6]
    summary = analysis.summarize_epochs(epochs, analysis.sidecar_for(csv))
    assert (summary.monitor, summary.monitor_mode) == ("Val_Dice", "max")
    assert (summary.best_monitored, summary.best_monitored_epoch) == (0.8, 4)
    text = report.training_report(summary, csv, "en")
    assert "Val_Dice = 0.800000 (Epoch 4, higher is better)" in text
    assert "Val_Loss: final 0.166667, best 0.166667 (Epoch 6)" in text
    # without a sidecar the monitored column is recognised from Best_Loss_So_Far
    assert analysis.monitor_of(epochs) == ("Val_Dice", "max")
    axes = figures.training_figure(epochs, monitor=("Val_Dice", "max")).get_axes()
    assert "best Val_Dice so far" in lines_by_label(axes[4])


def test_batch_spikes_nonfinite_and_downsampling(tmp_path):
    path = bench().write_batch_csv(tmp_path / "batch_metrics_20250101_000002.csv", 20_000, spikes=4, nonfinite=2)
    with open(path, "a") as f:
        f.write("117,171,0.5")  # partial last line
    data = read_batch_arrays(path)
    assert data.rows == 20_000 and list(data.counts[:2]) == [171, 171]
    result = analysis.analyze_batch_arrays(data)
    assert result.spike_count == 4 and result.nonfinite_count == 2
    full = pd.read_csv(path, nrows=20_000)
    for r in result.nonfinite.itertuples():
        assert np.isnan(full[(full.Epoch == r.Epoch) & (full.Batch == r.Batch)]["Loss"]).all()
    for r in result.spikes.itertuples():
        loss = full[(full.Epoch == r.Epoch) & (full.Batch == r.Batch)]["Loss"].iloc[0]
        assert loss == pytest.approx(r.Loss, rel=1e-6) and loss > 1.4
    assert len(result.x) <= analysis.MAX_POINTS and len(result.trend_y) <= analysis.MAX_POINTS
    assert set(np.round(result.y, 6)) <= set(np.round(full["Loss"].dropna(), 6))
    assert result.y.max() == pytest.approx(full["Loss"].max(), rel=1e-6)  # the peak survives
    text = report.batch_report(result, "en")
    assert "Spikes (loss > 6 std" in text and ": 4" in text and "Non-finite losses (NaN/Inf): 2" in text
    ax = figures.batch_figure(result).get_axes()[0]
    assert "spikes (4)" in lines_by_label(ax) and "NaN/Inf (2)" in lines_by_label(ax)


def test_duplicate_epochs_keep_the_last_row(tmp_path):
    csv = tmp_path / "epoch_metrics_20250101_000003.csv"
    csv.write_text("Epoch,Avg_Loss,Min_Batch_Loss,Max_Batch_Loss,Learning_Rate,Epoch_Time_Seconds,"
                   "Best_Loss_So_Far,Is_Best_Model,Timestamp\n"
                   "1,0.9,0.8,1.0,0.001,1.5,0.9,True,2025-01-01 00:00:01\n"
                   "2,0.7,0.6,0.8,0.001,1.5,0.7,True,2025-01-01 00:00:02\n"
                   "2,0.6,0.5,0.7,0.001,1.5,0.6,True,2025-01-01 00:00:03\n")
    e = read_epoch_csv(csv)
    assert list(e["Epoch"]) == [1, 2] and e["Avg_Loss"].tolist() == [0.9, 0.6]
    assert e["Epoch"].dtype == "int64" and e["Is_Best_Model"].dtype == bool
    assert str(e["Timestamp"].dtype).startswith("datetime64")


HEADER = "Epoch,Avg_Loss,Min_Batch_Loss,Max_Batch_Loss,Learning_Rate,Epoch_Time_Seconds,Best_Loss_So_Far,Is_Best_Model,Timestamp\n"
BAD_FILES = {
    "missing": (None, "not found"),
    "empty": (b"", "is empty"),
    "header_only": (HEADER.encode(), "no complete rows"),
    "missing_columns": (b"Epoch,Loss,Accuracy\n1,0.5,0.9\n", "missing column(s) Avg_Loss"),
    "non_numeric": ((HEADER + "1,abc,0.1,0.2,0.001,1.0,0.5,True,2025-01-01 00:00:00\n").encode(),
                    "line 2: Avg_Loss is 'abc', not a number"),
    "png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a CSV text file"),
    "spreadsheet_semicolons": (HEADER.replace(",", ";").encode(), "';'"),
}


def test_bad_input_gives_one_line_and_writes_nothing(tmp_path):
    cases = []
    for name, (content, expected) in BAD_FILES.items():
        root = tmp_path / name
        (root / "metrics").mkdir(parents=True)
        path = root / "metrics" / "epoch_metrics_20250101_000000.csv"
        if content is not None:
            path.write_bytes(content)
        cases.append((name, root, ["--metrics_file", str(path)], expected))
    for name, args, expected in [("unknown_run", ["--run", "20240101_000000"], "no such run"),
                                 ("not_a_run_id", ["--run", "yesterday"], "not a run id"),
                                 ("no_runs", [], "no runs in"), ("no_metrics_folder", [], "no metrics/ folder"),
                                 ("batch_of_epoch_only_run", ["--batch_metrics"], "no batch CSV")]:
        root = tmp_path / name
        root.mkdir()
        if name != "no_metrics_folder":
            (root / "metrics").mkdir()
        if name == "batch_of_epoch_only_run":
            write_run(root, "20250101_000000", epochs=2)
        cases.append((name, root, args, expected))
    before = {name: files_under(root) for name, root, _, _ in cases}
    procs = [(name, root, expected, subprocess.Popen([PY, "-m", "medic.analyze", *args], cwd=root, env=child_env(),
                                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
             for name, root, args, expected in cases]
    for name, root, expected, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, out, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)
        assert err.startswith("medic: error: ") and expected in err, (name, err)
        assert files_under(root) == before[name], name  # nothing written, nothing removed


def test_benchmark_smoke(tmp_path):
    out = tmp_path / "analysis.md"
    assert bench().main(["--rows", "3000", "--poll-rows", "3000", "--repeats", "1", "--out", str(out)]) == 0
    table = out.read_text()
    assert "| 3,000 |" in table and "CsvTail.poll" in table


def test_readers_import_without_torch():
    code = ("import sys, medic.commands.analyze, medic.store.catalog, medic.analysis.compare, medic.commands.watch, medic.commands.clean, medic.analysis.stats;"
            "assert 'torch' not in sys.modules, 'torch imported';"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time'")
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
