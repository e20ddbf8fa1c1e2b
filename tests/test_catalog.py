"""medic.runs() / medic runs / medic.load_run: listing and loading runs whose files are partly
gone, still being written, or whose process died without saying so."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from _analysis_helpers import cli, copy_real, write_run
from conftest import child_env

import medic
from medic.store.catalog import load_run, runs
from medic.errors import RunNotFoundError
from medic.store.logger import TELEMETRY_COLUMNS
from medic.store.sidecar import update_sidecar


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_lists_real_and_generated_runs(tmp_path_factory):
    root = copy_real(tmp_path_factory, tmp_path_factory.mktemp("catalog") / "project")
    real_id = load_run("latest", root=root).run_id
    write_run(root, "20250101_000001", epochs=4, config={"lr": 0.01, "batch_size": 8})
    frame = runs(root)
    assert list(frame["run_id"]) == ["20250101_000001", real_id]  # oldest first
    gen, real = frame.iloc[0], frame.iloc[1]
    assert (gen["status"], gen["epochs_done"], gen["epochs_planned"], gen["lr"], gen["batch_size"]) == \
        ("completed", 4, 4, 0.01, 8)
    assert gen["best_epoch"] == 4 and gen["best"] == pytest.approx(load_run("20250101_000001", root).epochs["Avg_Loss"].min())
    assert gen["total_time_s"] == pytest.approx(sum(2.0 + 0.1 * e for e in range(1, 5)))
    assert gen["start"] == pd.Timestamp("2025-01-01 00:00:01")
    run = load_run(real_id, root=root)
    assert (real["status"], real["epochs_done"], real["epochs_planned"], real["world_size"]) == ("completed", 3, 3, 1)
    assert real["total_time_s"] == pytest.approx(run.epochs["Epoch_Time_Seconds"].sum())
    assert real["val_fraction"] == 0.25 and real["files"] == "epoch,batch,json,log,ckpt,results"
    assert real["best"] == pytest.approx(run.epochs["Best_Loss_So_Far"].iloc[-1])


def test_runs_after_the_guides_cleanup_commands(project):
    for k in range(1, 6):
        write_run(project, f"2025010{k}_000000", epochs=2, batches=3)
        (project / "log").mkdir(exist_ok=True)
        (project / "log" / f"training_2025010{k}_000000.log").write_text("log\n")
    week_ago = time.time() - 8 * 86400
    for name in ("batch_metrics_20250101_000000.csv", "epoch_metrics_20250102_000000.csv"):
        os.utime(project / "metrics" / name, (week_ago, week_ago))
    for k in range(1, 6):  # ls -t sorts by time: make the order match the ids
        p = project / "metrics" / f"epoch_metrics_2025010{k}_000000.csv"
        if p.exists() and k != 2:
            os.utime(p, (time.time() - 100 + k, time.time() - 100 + k))
    subprocess.run('find metrics/ -name "*.csv" -mtime +7 -delete', shell=True, cwd=project, check=True)
    subprocess.run("ls -t epoch_metrics_*.csv | tail -n +4 | xargs rm -f", shell=True, cwd=project / "metrics",
                   check=True)
    (project / "metrics" / "run_20250105_000000.json").unlink()
    (project / "log" / "training_20250104_000000.log").unlink()
    frame = runs(project).set_index("run_id")
    assert list(frame.index) == [f"2025010{k}_000000" for k in range(1, 6)]
    assert frame.loc["20250101_000000", "problem"] == "epoch CSV missing"  # removed by ls|tail
    assert frame.loc["20250101_000000", "files"] == "json,log"
    assert frame.loc["20250102_000000", "files"] == "batch,json,log"  # the find removed its epoch CSV
    assert frame.loc["20250103_000000", "epochs_done"] == 2
    assert frame.loc["20250104_000000", "files"] == "epoch,batch,json"
    # no sidecar: its files are its only sign of life, and they have just been written
    assert frame.loc["20250105_000000", "status"] == "running"
    assert frame.loc["20250105_000000", "epochs_done"] == 2
    out = cli("runs", cwd=project)
    assert out.returncode == 0 and "20250105_000000" in out.stdout and "epoch CSV missing" in out.stdout


def test_status_of_live_dead_reused_and_silent_runs(project):
    write_run(project, "20250101_000001", epochs=2, status="running", pid=os.getpid())
    write_run(project, "20250101_000002", epochs=2, status="running", pid=dead_pid())
    write_run(project, "20250101_000003", epochs=2, status="running", pid=None)
    write_run(project, "20250101_000004", epochs=2, status="running", pid=None)
    write_run(project, "20250101_000005", epochs=2, status="running", pid=os.getpid())
    old = time.time() - 3 * 3600
    for name in ("epoch_metrics_20250101_000004.csv", "run_20250101_000004.json", "run_20250101_000005.json"):
        os.utime(project / "metrics" / name, (old, old))  # 5: this process started after it was written
    # a run still being written: the last row is cut short
    with open(project / "metrics" / "epoch_metrics_20250101_000001.csv", "a") as f:
        f.write("3,0.2,0.1")
    status = runs(project).set_index("run_id")["status"].to_dict()
    assert status == {"20250101_000001": "running", "20250101_000002": "interrupted",
                      "20250101_000003": "running", "20250101_000004": "interrupted",
                      "20250101_000005": "interrupted"}
    assert runs(project).set_index("run_id").loc["20250101_000001", "epochs_done"] == 2
    update_sidecar(project / "metrics" / "run_20250101_000002.json", status="failed")
    assert load_run("20250101_000002", project).status == "failed"


def test_load_run_by_id_path_and_latest(tmp_path_factory):
    root = copy_real(tmp_path_factory, tmp_path_factory.mktemp("load") / "project")
    latest = load_run("latest", root=root)
    by_path = load_run(latest.paths["epoch_csv"])
    by_batch_path = load_run(latest.paths["batch_csv"])
    assert by_path.run_id == by_batch_path.run_id == latest.run_id
    assert set(latest.paths) - {"heartbeat"} == {"epoch_csv", "batch_csv", "sidecar", "log", "checkpoints",
                                                 "results"}
    e = latest.epochs
    assert list(e.columns[:9]) == ["Epoch", "Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss", "Learning_Rate",
                                   "Epoch_Time_Seconds", "Best_Loss_So_Far", "Is_Best_Model", "Timestamp"]
    assert list(e.columns[9:]) == ["Val_Loss", "Val_Dice", "Val_Dice_class_1", *TELEMETRY_COLUMNS]
    assert e["Epoch"].dtype == "int64" and e["Is_Best_Model"].dtype == bool and e["Avg_Loss"].dtype == "float64"
    assert str(e["Timestamp"].dtype).startswith("datetime64") and e["Timestamp"].notna().all()
    raw = pd.read_csv(latest.paths["epoch_csv"])
    pd.testing.assert_series_equal(e["Avg_Loss"], raw["Avg_Loss"])
    b = latest.batches
    assert list(b.columns) == ["Epoch", "Batch", "Loss", "Learning_Rate", "Timestamp"]
    pd.testing.assert_series_equal(b["Loss"], pd.read_csv(latest.paths["batch_csv"])["Loss"])
    assert latest.config["val_fraction"] == 0.25 and latest.planned_epochs == 3
    assert "completed" in repr(latest)
    with pytest.raises(RunNotFoundError, match="no such run"):
        load_run("20200101_000000", root=root)


def test_header_only_run_loads_empty(project):
    (project / "metrics").mkdir()
    (project / "metrics" / "epoch_metrics_20250101_000000.csv").write_text(
        "Epoch,Avg_Loss,Min_Batch_Loss,Max_Batch_Loss,Learning_Rate,Epoch_Time_Seconds,Best_Loss_So_Far,"
        "Is_Best_Model,Timestamp,Val_Dice\n")
    run = medic.load_run("20250101_000000", project)
    assert run.epochs.empty and "Val_Dice" in run.epochs and run.batches is None and run.sidecar is None
    assert runs(project)["epochs_done"].tolist() == [0]


def test_runs_cli_table_and_csv(project):
    write_run(project, "20250101_000001", epochs=3, config={"lr": 0.01})
    write_run(project, "20250101_000002", epochs=2, status="running", pid=dead_pid())
    out = cli("runs", cwd=project)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:5] == ["run", "status", "start", "epochs", "best"] and "lr" in lines[0]
    assert "20250101_000001" in lines[1] and "completed" in lines[1] and "3/3" in lines[1]
    assert "20250101_000002" in lines[2] and "interrupted" in lines[2]
    via_medic = subprocess.run([sys.executable, "-m", "medic.cli", "runs"], cwd=project, capture_output=True,
                               text=True, env=child_env())
    assert via_medic.stdout == out.stdout
    out = cli("runs", "--csv", cwd=project)
    table = pd.read_csv(io.StringIO(out.stdout))
    assert table["run_id"].astype(str).tolist() == ["20250101_000001", "20250101_000002"]
    assert table["lr"].tolist() == [0.01, 0.001]
    empty = project / "empty"
    (empty / "metrics").mkdir(parents=True)
    out = cli("runs", cwd=empty)
    assert out.returncode == 0 and "no runs in" in out.stdout
    out = cli("runs", cwd=project / "metrics")
    assert out.returncode == 2 and "not a medic project" in out.stderr and "Traceback" not in out.stderr
