"""Real Lightning and MONAI/Ignite fits with medic's logger and handler, each script in its own
process (Lightning's ddp launcher re-runs ``sys.argv``), 1 and 2 processes with gloo on CPU; then
medic's own commands on the runs they leave.

The four fits run at the same time into one project (the run ids are reserved, so they cannot
clash): one process with batch 8 and two with batch 4 see the same samples per step, so their
epoch rows must agree (1xN = 2xN/2)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, child_env
from medic.store.logger import EPOCH_COLUMNS

pytest.importorskip("lightning")
pytest.importorskip("ignite")
pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).resolve().parent / "integration_scripts"


def entry_point_dist(folder: Path) -> Path:
    """A distribution on the path that declares pyproject's Lightning entry point, as an install
    of medic does: the fit sees it whether or not the test environment's install declares it too
    (then twice, which must still attach one callback)."""
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    group = "lightning.pytorch.callbacks_factory"
    dist = folder / "medic_entry-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: medic-entry\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps[group].items()))
    return folder


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """The four fits, run together; their outputs (stdout, stderr, run ids) by name."""
    root = tmp_path_factory.mktemp("integrations")
    project = root / "project"
    ep = entry_point_dist(root / "entry_point")
    py = sys.executable
    commands = {
        # entry point installed: a fit, the same fit resumed for one epoch more, a failing fit, a
        # metric first logged in epoch 2, a fit that fails before its first step, two fits with one logger,
        # a fit given the callback by the user as well
        "lightning": ([py, str(SCRIPTS / "lightning_fit.py"), str(project), "--stages", "fit,resume,fail,late,broken,reuse,own"],
                      child_env(PYTHONPATH=f"{ROOT}:{ep}")),
        # no entry point: the logger attaches its callback itself
        "lightning_ddp": ([py, str(SCRIPTS / "lightning_fit.py"), str(project), "--devices", "2", "--batch_size", "4",
                           "--without_entry_point"],
                          child_env()),
        # a fit, the same run continued for one epoch more from Ignite's saved state, a failing fit
        "monai": ([py, str(SCRIPTS / "monai_fit.py"), str(project), "--stages", "fit,resume,fail"], child_env()),
        "ignite_ddp": ([py, str(SCRIPTS / "monai_fit.py"), str(project), "--nproc", "2", "--batch_size", "4", "--plain"],
                       child_env()),
    }
    procs = {name: subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for name, (cmd, env) in commands.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}:\n{stdout[-3000:]}\n{stderr[-3000:]}"
        runs = [line.split()[1] for line in stdout.splitlines() if line.startswith("RUN ")]
        out[name] = {"stdout": stdout, "stderr": stderr, "runs": runs}
    out["project"] = project
    return out


def table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def header(path: Path) -> list[str]:
    return path.read_text().splitlines()[0].split(",")


def files(project: Path, run_id: str):
    m = project / "metrics"
    return (m / f"epoch_metrics_{run_id}.csv", m / f"batch_metrics_{run_id}.csv",
            json.loads((m / f"run_{run_id}.json").read_text()))


def assert_rows_from_steps(epochs: list[dict], batches: list[dict]) -> None:
    """Each epoch row's average, min and max are those of its batch rows (global step losses)."""
    for row in epochs:
        losses = [float(b["Loss"]) for b in batches if b["Epoch"] == row["Epoch"]]
        assert float(row["Avg_Loss"]) == pytest.approx(sum(losses) / len(losses), abs=2e-6)
        assert (float(row["Min_Batch_Loss"]), float(row["Max_Batch_Loss"])) == (min(losses), max(losses))
        assert row["Is_Best_Model"] in ("True", "False") and float(row["Epoch_Time_Seconds"]) >= 0


def assert_same_rows(a: list[dict], b: list[dict]) -> None:
    assert [r["Epoch"] for r in a] == [r["Epoch"] for r in b]
    for ra, rb in zip(a, b):
        for col in ("Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss", "Best_Loss_So_Far", "val_loss"):
            assert float(ra[col]) == pytest.approx(float(rb[col]), abs=1e-5), (ra["Epoch"], col)


def test_lightning_fit_writes_the_seed_schema_and_a_completed_sidecar(fits):
    project, (run, resumed, failed, late, broken, *reused, own) = fits["project"], fits["lightning"]["runs"]
    assert "CALLBACK entry point" in fits["lightning"]["stdout"]  # attached by the declared entry point
    # one MedicCallback in every fit: entry point declared twice, or the user's own passed as well
    counts = [line.split("COUNT")[1].split() for line in fits["lightning"]["stdout"].splitlines()
              if line.startswith("RUN ")]
    assert counts == [["1"]] * 8
    assert table(files(project, own)[0])[0]["Epoch"] == "1" and len(table(files(project, own)[0])) == 1
    assert resumed == run
    assert "SIDECAR running True" in fits["lightning"]["stdout"]  # while it trained
    epoch_csv, batch_csv, side = files(project, run)
    assert header(epoch_csv) == list(EPOCH_COLUMNS) + ["val_loss", "val_dice"]
    epochs, batches = table(epoch_csv), table(batch_csv)
    # a fit of 3 epochs resumed from its checkpoint for a 4th: no row twice, none missing
    assert [r["Epoch"] for r in epochs] == ["1", "2", "3", "4"]
    assert [(b["Epoch"], b["Batch"]) for b in batches] == [(str(e), str(i)) for e in range(1, 5) for i in range(8)]
    assert_rows_from_steps(epochs, batches)
    assert {r["Learning_Rate"] for r in epochs} == {"0.50000000"}
    assert all(0 < float(r["val_dice"]) <= 1 for r in epochs)
    assert side["status"] == "completed" and side["world_size"] == 1 and side["source"] == "lightning"
    assert side["epochs"] == 4 and side["epochs_done"] == 4 and side["batches_per_epoch"] == 8
    assert side["config"] == {"lr": 0.5, "fail_at": 0, "late_metric": False, "broken": False, "batch_size": 8}
    assert [r["from_epoch"] for r in side["resumed"]] == [3]
    assert (project / "checkpoints" / run / "checkpoints").is_dir()


def test_a_failing_lightning_fit_is_marked_failed(fits):
    project, failed = fits["project"], fits["lightning"]["runs"][2]
    epoch_csv, _, side = files(project, failed)
    assert side["status"] == "failed" and side["message"] == "RuntimeError: the data loader broke"
    assert [r["Epoch"] for r in table(epoch_csv)] == ["1"]


def test_a_fit_that_fails_before_training_leaves_no_run_behind(fits):
    project = fits["project"]
    assert fits["lightning"]["runs"][4] == "-" and "FAILED no optimizer" in fits["lightning"]["stdout"]
    # every run id reserved by the fits (all ended now) has its files: no empty CSV left over
    csvs = sorted((project / "metrics").glob("epoch_metrics_*.csv"))
    assert all(p.stat().st_size > 0 for p in csvs)
    assert len(csvs) == len(list((project / "metrics").glob("run_*.json"))) == 10


def test_a_logger_used_for_two_fits_records_two_runs(fits):
    project, reused = fits["project"], fits["lightning"]["runs"][5:7]
    assert len(set(reused)) == 2
    for run in reused:
        epoch_csv, _, side = files(project, run)
        assert side["status"] == "completed" and [r["Epoch"] for r in table(epoch_csv)] == ["1"]
        assert any((project / "checkpoints" / run / "checkpoints").glob("*.ckpt"))


def test_a_metric_first_logged_later_is_named_in_a_warning(fits):
    project, late = fits["project"], fits["lightning"]["runs"][3]
    warning = [line for line in fits["lightning"]["stderr"].splitlines() if "late_metric" in line]
    assert len(warning) == 1 and warning[0].startswith("medic: warning:") and "metrics=" in warning[0]
    assert "late_metric" not in header(files(project, late)[0])


def test_lightning_ddp_rows_are_global_and_equal_one_process_with_the_whole_batch(fits):
    project = fits["project"]
    assert "CALLBACK logger" in fits["lightning_ddp"]["stdout"]  # no entry point: the logger attached it
    (ddp,) = fits["lightning_ddp"]["runs"]
    epoch_csv, batch_csv, side = files(project, ddp)
    assert side["status"] == "completed" and side["world_size"] == 2 and side["config"]["batch_size"] == 4
    assert "SIDECAR running True" in fits["lightning_ddp"]["stdout"]
    epochs, batches = table(epoch_csv), table(batch_csv)
    assert_rows_from_steps(epochs, batches)
    single = table(files(project, fits["lightning"]["runs"][0])[0])[:3]
    assert_same_rows(epochs, single)
    assert len(batches) == 24  # 64 samples, 8 per global step, 3 epochs: one row per global step


def test_monai_supervised_trainer_and_ignite_ddp(fits):
    project = fits["project"]
    run, resumed, failed = fits["monai"]["runs"]
    assert resumed == run and "SIDECAR running True" in fits["monai"]["stdout"]
    epoch_csv, batch_csv, side = files(project, run)
    assert header(epoch_csv) == list(EPOCH_COLUMNS) + ["val_loss"]
    epochs, batches = table(epoch_csv), table(batch_csv)
    assert [r["Epoch"] for r in epochs] == ["1", "2", "3", "4"]
    assert [(b["Epoch"], b["Batch"]) for b in batches] == [(str(e), str(i)) for e in range(1, 5) for i in range(8)]
    assert_rows_from_steps(epochs, batches)
    assert side["status"] == "completed" and side["source"] == "monai" and side["epochs"] == 4
    assert [r["from_epoch"] for r in side["resumed"]] == [3]
    assert side["config"] == {"lr": 0.5, "batch_size": 8} and side["batches_per_epoch"] == 8
    fail_side = files(project, failed)[2]
    assert fail_side["status"] == "failed" and "the data loader broke" in fail_side["message"]
    (ddp,) = fits["ignite_ddp"]["runs"]
    ddp_csv, _, ddp_side = files(project, ddp)
    assert ddp_side["status"] == "completed" and ddp_side["world_size"] == 2
    assert "SIDECAR running True" in fits["ignite_ddp"]["stdout"]
    assert_same_rows(table(ddp_csv), epochs[:3])
    # the same model, data and optimizer under Lightning (resumed alike): the same numbers
    assert_same_rows(epochs, table(files(project, fits["lightning"]["runs"][0])[0]))


def medic_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medic.cli", *args], cwd=cwd, env=child_env(MPLBACKEND="Agg"),
                          capture_output=True, text=True, timeout=300)


def test_medic_commands_work_on_these_runs_unchanged(fits):
    project = fits["project"]
    lightning_run, monai_run = fits["lightning"]["runs"][0], fits["monai"]["runs"][0]
    listed = medic_cli("runs", "--csv", cwd=project)
    assert listed.returncode == 0, listed.stderr
    rows = {r["run_id"]: r for r in csv.DictReader(listed.stdout.splitlines())}
    assert rows[lightning_run]["status"] == "completed" and rows[lightning_run]["epochs_planned"] == "4"
    assert rows[monai_run]["status"] == "completed" and rows[monai_run]["lr"] == "0.5"
    assert rows[fits["lightning"]["runs"][2]]["status"] == "failed"
    assert rows[fits["lightning_ddp"]["runs"][0]]["world_size"] == "2"
    for run in (lightning_run, monai_run):
        done = medic_cli("analyze", "--run", run, "--quiet", cwd=project)
        assert done.returncode == 0, done.stderr
        assert any((project / "analysis").rglob(f"*{run}*")), list((project / "analysis").rglob("*"))
    compared = medic_cli("compare", lightning_run, monai_run, cwd=project)
    assert compared.returncode == 0, compared.stderr
    watched = medic_cli("watch", "--run", lightning_run, "--once", cwd=project)
    assert watched.returncode == 0 and "completed" in watched.stdout, watched.stdout + watched.stderr
