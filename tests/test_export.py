"""``medic export`` read back with the targets' own readers: TensorBoard's ``EventAccumulator`` and
MLflow's ``MlflowClient``. Real training runs (one process, tiny images), real resumes."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PY, child_env
from _train_helpers import TINY, only_run_id, read_csv, train
from medic.cli import main

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402

RUN = [*TINY, "--epochs", "2", "--log_batch_metrics", "--val_fraction", "0.25", "--save_interval", "1"]
NOT_SCALARS = ("Epoch", "Timestamp")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export") / "project"
    root.mkdir()
    train(root, *RUN)
    return root


@pytest.fixture
def project(trained, tmp_path) -> Path:
    """A copy of the trained project that a test may resume and export into."""
    return Path(shutil.copytree(trained, tmp_path / "project"))


def export(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``medic export`` in this process (MLflow and TensorBoard are imported once for all tests);
    the bad-input test runs it as a separate process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["export", "--root", str(root), *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def export_process(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "medic.cli", "export", "--root", str(root), *args], cwd=root,
                          env=env or child_env(), capture_output=True, text=True, timeout=60)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def file_store(root: Path) -> str:
    return (root / "mlruns").as_uri()


def mlflow_client(uri: str) -> MlflowClient:
    import os
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return MlflowClient(tracking_uri=uri)


def tb_scalars(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def hparams_sessions(folder: Path) -> list[str]:
    """Every HParams session start written in the run's folder, in every event file."""
    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            found += [v.tag for v in event.summary.value if v.tag == "_hparams_/session_start_info"]
    return found


def assert_tensorboard_equals_csv(folder: Path, project: Path, run_id: str) -> None:
    header, rows = read_csv(project / "metrics" / f"epoch_metrics_{run_id}.csv")
    acc = tb_scalars(folder)
    for column in header:
        if column in NOT_SCALARS:
            continue
        points = acc.Scalars(f"epoch/{column}")
        assert [p.step for p in points] == [int(r["Epoch"]) for r in rows], column  # no duplicate step
        expected = [float(r[column] == "True") if column == "Is_Best_Model" else float(r[column]) for r in rows]
        assert [p.value for p in points] == [np.float32(v) for v in expected], column
    _, batches = read_csv(project / "metrics" / f"batch_metrics_{run_id}.csv")
    points = acc.Scalars("batch/Loss")
    assert [p.step for p in points] == list(range(len(batches)))
    assert [p.value for p in points] == [np.float32(float(b["Loss"])) for b in batches]
    assert len(hparams_sessions(folder)) == 1  # one HParams entry, however often exported


def mlflow_run(client: MlflowClient, run_id: str):
    experiment = client.get_experiment_by_name("medic")
    runs = client.search_runs([experiment.experiment_id], f"tags.`medic.run_id` = '{run_id}'")
    assert len(runs) == 1, runs
    return runs[0]


def assert_mlflow_equals_csv(client: MlflowClient, project: Path, run_id: str):
    run = mlflow_run(client, run_id)
    header, rows = read_csv(project / "metrics" / f"epoch_metrics_{run_id}.csv")
    for column in header:
        if column in NOT_SCALARS or column == "Is_Best_Model":
            continue
        history = sorted(client.get_metric_history(run.info.run_id, column), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(int(r["Epoch"]), float(r[column])) for r in rows], column
    return run


def test_tensorboard_round_trip_and_a_repeat_adds_nothing(project):
    run_id = only_run_id(project)
    out = ok(export(project, "--tensorboard", str(project / "tb")))
    assert "2 epoch rows" in out and "written" in out
    folder = project / "tb" / run_id
    assert_tensorboard_equals_csv(folder, project, run_id)
    # the options as HParams, and the best value as their metric
    acc = tb_scalars(folder)
    assert acc.Scalars("epoch/Best_Loss_So_Far")[-1].value == np.float32(
        float(read_csv(project / "metrics" / f"epoch_metrics_{run_id}.csv")[1][-1]["Best_Loss_So_Far"]))
    files = sorted(p.name for p in folder.iterdir())
    assert "up to date" in ok(export(project, "--tensorboard", str(project / "tb"), "--run", run_id))
    assert sorted(p.name for p in folder.iterdir()) == files
    assert_tensorboard_equals_csv(folder, project, run_id)


def test_mlflow_round_trip_with_params_and_artifacts(project):
    run_id = only_run_id(project)
    uri = file_store(project)
    out = ok(export(project, "--mlflow", uri, "--checkpoint", "best"))
    assert "artifact checkpoints/best_model.pth" in out
    client = mlflow_client(uri)
    run = assert_mlflow_equals_csv(client, project, run_id)
    import json
    config = json.loads((project / "metrics" / f"run_{run_id}.json").read_text())["config"]
    assert run.data.params == {k: str(v) for k, v in config.items() if k != "resume"}
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "analysis")}
    assert f"analysis/training_analysis_epoch_metrics_{run_id}.png" in artifacts
    assert f"analysis/training_report_epoch_metrics_{run_id}.txt" in artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best_model.pth"]
    assert "up to date" in ok(export(project, "--mlflow", uri))
    assert mlflow_run(client, run_id).info.run_id == run.info.run_id


@pytest.mark.slow
def test_export_follow_a_resume_then_a_resume_that_cut_rows(project):
    run_id, uri, tb = only_run_id(project), file_store(project), str(project / "tb")
    ok(export(project, "--tensorboard", tb, "--mlflow", uri))
    client = mlflow_client(uri)
    first = mlflow_run(client, run_id)
    # trained further while --follow exports it: only the new epochs are added, as they land
    trainer = subprocess.Popen([PY, "-m", "medic.train", "--resume", "latest", "--epochs", "4"], cwd=project,
                               env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while '"running"' not in (project / "metrics" / f"run_{run_id}.json").read_text():
            assert time.monotonic() < deadline and trainer.poll() is None, trainer.stderr.read()
            time.sleep(0.05)
        out = ok(export(project, "--follow", "--interval", "0.1", "--tensorboard", tb, "--mlflow", uri))
    finally:
        trainer.wait(timeout=120)
    counts = [int(n) for n in re.findall(r"TensorBoard: .*\((\d+) epochs", out)]
    assert "(status running)" in out and counts[0] < 4 and counts[-1] == 4, out  # followed it live
    assert f"Run {run_id} completed: 4 epochs exported." in out
    assert_tensorboard_equals_csv(project / "tb" / run_id, project, run_id)
    again = assert_mlflow_equals_csv(client, project, run_id)
    assert again.info.run_id == first.info.run_id and again.info.status == "FINISHED"
    assert again.data.params["epochs"] == "2" and again.data.tags["medic.resume.epochs"] == "4"
    # a resume from epoch 1 cuts epochs 2-4 and trains them again: the export replaces them
    old_rows = read_csv(project / "metrics" / f"epoch_metrics_{run_id}.csv")[1]
    train(project, "--resume", str(project / "checkpoints" / run_id / "model_epoch_1.pth"), "--epochs", "3")
    new_rows = read_csv(project / "metrics" / f"epoch_metrics_{run_id}.csv")[1]
    assert old_rows[0] == new_rows[0] and old_rows[1] != new_rows[1] and len(new_rows) == 3
    out = ok(export(project, "--tensorboard", tb, "--mlflow", uri))
    assert out.count("replaced") == 2, out
    assert_tensorboard_equals_csv(project / "tb" / run_id, project, run_id)
    assert len(list((project / "tb" / run_id).glob("events.out.tfevents.*"))) == 1
    recreated = assert_mlflow_equals_csv(client, project, run_id)
    assert recreated.info.run_id != first.info.run_id
    assert recreated.data.params["epochs"] == "3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.parametrize("case", ["unknown run", "no target", "under a file", "mlflow under a file",
                                  "unreachable server", "missing package"])
def test_bad_input_gives_one_line_and_writes_nothing(trained, tmp_path, case):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    env, args = None, ["--tensorboard", str(tmp_path / "tb")]
    expected = {"unknown run": "no such run", "no target": "nothing to export to",
                "under a file": "cannot create the TensorBoard folder",
                "mlflow under a file": "cannot create the MLflow store folder",
                "unreachable server": "cannot use the MLflow tracking store",
                "missing package": "pip install 'medic[export]'"}[case]
    if case == "unknown run":
        args += ["--run", "20990101_000000"]
    elif case == "no target":
        args = []
    elif case == "under a file":
        args = ["--tensorboard", str(blocker / "tb")]
    elif case == "mlflow under a file":
        args += ["--mlflow", f"file:{blocker / 'mlruns'}"]
    elif case == "unreachable server":
        args += ["--mlflow", f"http://127.0.0.1:{free_port()}"]
    elif case == "missing package":
        shim = tmp_path / "shim" / "mlflow"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'mlflow'\")\n")
        env = child_env()
        env["PYTHONPATH"] = f"{shim.parent}:{env['PYTHONPATH']}"
        args += ["--mlflow", "file:mlruns"]
    before = snapshot(trained)
    started = time.monotonic()
    proc = export_process(trained, *args, env=env)
    assert time.monotonic() - started < 30
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("medic: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "tb").exists() and snapshot(trained) == before
