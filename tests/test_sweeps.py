"""``medic sweep`` and ``05_sweep.ipynb``: real papermill trials of notebooks/01_train.ipynb, each an
ordinary medic run, driven by an Optuna study in SQLite. Tiny trials (16 images of 32x32)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from _nb_helpers import PY, REPO, child_env
from medic.jobs import attach
from medic.notebooks import KERNEL_NAME, compare_settings, ensure_kernel
from medic.procs import pid_alive, send_signal
from medic.store.catalog import runs
from medic.store.paths import Project
from medic.store.readers import read_epoch_csv
from medic.store.sidecar import read_sidecar

TINY = ["--num_samples", "16", "--image_size", "32", "--log_interval", "2", "--save_interval", "1"]
TINY_FIXED = {"num_samples": 16, "image_size": 32, "log_interval": 2, "save_interval": 1}


@pytest.fixture(scope="module", autouse=True)
def medic_kernel():
    ensure_kernel()


def sweep_cli(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "medic.cli", "sweep", *args], cwd=root, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_cli(root: Path, *args: str) -> subprocess.Popen:
    log = open(root / f"driver_{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([PY, "-m", "medic.cli", "sweep", *args], cwd=root, env=child_env(),
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def the_sweep(root: Path) -> str:
    ids = sorted(p.name for p in (root / "analysis" / "sweeps").glob("sweep_*"))
    assert len(ids) == 1, ids
    return ids[0]


def epochs_of(root: Path, run_id: str) -> list[int]:
    return [int(e) for e in read_epoch_csv(Project.at(root).epoch_csv(run_id), allow_empty=True)["Epoch"]]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# -- bad input: one line, exit 2, nothing started or written -------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--grid", "lrr=0.1,0.2"], "'lrr' is not a training option (did you mean 'lr'?); valid names: epochs"),
    (["--trials", "2", "--space", "lr=loguniform(1e-4)"], "loguniform takes two float bounds"),
    (["--trials", "2", "--space", "lr=gauss(1,2)"], "is not a distribution"),
    (["--grid", "lr="], "a grid of 0 points"),
    (["--grid", "lr=0.1", "--slots", "64"], "--slots 64 x nproc_per_node 1 needs 64"),
    (["--resume", "sweep_20990101_000000"], "no sweep 'sweep_20990101_000000'"),
    (["--grid", "batch_size=2,x"], "batch_size values must be int"),
    (["--space", "lr=uniform(0.1,0.2)"], "--trials must be >= 1"),
    (["--grid", "lr=0.1", "--time", "10"], "--time is an option of --launcher slurm"),
    (["--grid", "lr=0.1", "--nodes", "2"], "--nodes 2 needs --launcher slurm"),
    (["--grid", "lr=0.1", "--driver_on_slurm"], "--driver_on_slurm submits the driver of a --launcher slurm sweep"),
    (["--grid", "lr=0.1", "--launcher", "slurm", "--dry_run"], "--dry_run is an option of medic train"),
    (["--grid", "lr=0.1", "--launcher", "slurm", "--gpus_per_node", "-1"], "option gpus_per_node must be >= 0"),
    (["--grid", "lr=0.1", "--slotz", "2"], "unrecognized argument '--slotz'; did you mean --slots?"),
    (["--grid", "lr=0.1", "--epocs", "2"], "unrecognized argument '--epocs'; did you mean --epochs?"),
])
def test_bad_input_is_one_line_and_starts_nothing(project, monkeypatch, capsys, args, message):
    from medic.cli import main
    monkeypatch.chdir(project)
    assert main(["sweep", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medic: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(project.iterdir()) == []  # no sweep folder, no run


def test_slurm_without_sbatch_is_one_line_and_starts_nothing(project, monkeypatch, capsys):
    from medic.cli import main
    monkeypatch.chdir(project)
    monkeypatch.setenv("PATH", str(project / "no-such-bin"))
    assert main(["sweep", "--grid", "lr=0.1", "--launcher", "slurm", "--slots", "2"]) == 2
    err = capsys.readouterr().err
    assert err == "medic: error: --launcher slurm: no sbatch on PATH (run this on a SLURM login node, or load " \
                  "SLURM's module first)\n"
    assert list(project.iterdir()) == []


def test_a_trial_job_runs_papermill_under_the_run_script_of_medic_train(project):
    """One script builder: the trial's job has medic train's request, traps and hooks, with
    papermill on the trial notebook as its step; the driver's own job asks for one CPU."""
    from medic.config import TrainConfig
    from medic.slurm.options import SlurmOptions
    from medic.slurm.script import batch_script
    from medic.sweeps.run import new_spec
    from medic.sweeps.slurm_trial import SlurmTrialRun, driver_script
    slurm = SlurmOptions(launcher="slurm", gpus_per_node=2, time="1:00:00", partition="gpu")
    spec = new_spec(project, grid={"lr": [0.1]}, fixed={"epochs": 3}, slurm=slurm.to_dict())
    spec.sweep_id = "sweep_20260101_000000"
    run = SlurmTrialRun(spec, project, None, 0, {"lr": 0.1}, 0, {}, slurm=slurm)
    run.run_id = "20260101_000001"
    script = run.script()
    train = batch_script(TrainConfig(), slurm, run.run_id, str(project), "/py", "/out")
    shared = [line for line in train.splitlines() if line.startswith(
        ("trap", "RESUME=", "#SBATCH --requeue", "#SBATCH --signal", "#SBATCH --gpus", '"${HOOK[@]}" end', "    wait"))]
    assert len(shared) == 11 and all(line in script for line in shared), shared
    assert "#SBATCH --gpus-per-node=2" in script and "#SBATCH --time=1:00:00" in script
    assert " -m medic.sweeps.execute " in script and "$RESUME &" in script and "srun" not in script
    assert "MEDIC_SWEEP=sweep_20260101_000000 MEDIC_SWEEP_TRIAL=0 MEDIC_SWEEP_RUN_ID=20260101_000001" in script
    assert run.parameters()["nproc_per_node"] == 2 and run.parameters()["resume"] == ""
    driver = driver_script(project, spec.sweep_id, 2, "", slurm)
    assert "#SBATCH --cpus-per-task=1" in driver and "gpus" not in driver and "--partition=gpu" in driver
    assert f"sweep --resume {spec.sweep_id} --slots 2" in driver


def test_the_default_storage_is_the_journal_on_a_cluster_and_an_old_sweep_keeps_its_own(project):
    from medic.sweeps.spec import default_storage, sweep_dir
    folder = sweep_dir(project, "sweep_1")
    folder.mkdir(parents=True)
    assert default_storage(project, "sweep_1", shared=True) == f"journal://{folder.resolve() / 'study.journal'}"
    assert default_storage(project, "sweep_1", shared=False) == f"sqlite:///{folder.resolve() / 'study.db'}"
    (folder / "study.db").touch()  # a sweep made before: resumed with its SQLite study, wherever it is
    assert default_storage(project, "sweep_1", shared=True).startswith("sqlite:///")


def test_bad_input_from_the_shell_exits_2(project):
    done = sweep_cli(project, "--grid", "lr=0.1", "--epochs", "0", timeout=60)
    assert (done.returncode, done.stderr) == (2, "medic: error: option epochs must be > 0, got 0\n")
    assert list(project.iterdir()) == []


def test_the_python_api_checks_the_same_way(project):
    import medic
    from medic.errors import MedicError
    with pytest.raises(MedicError, match="not a training option"):
        medic.sweep(grid={"learning_rate": [0.1]}, root=project)
    assert list(project.iterdir()) == []


def test_slots_get_their_own_gpus_or_a_share_of_the_cores(monkeypatch):
    from medic.errors import MedicError
    from medic.sweeps.spec import SweepSpec, check_slots
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    spec = SweepSpec("s", grid={"lr": [0.1]}, fixed={"nproc_per_node": 2})
    assert check_slots(spec, 2) == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    with pytest.raises(MedicError, match="needs 6 GPUs; 4 visible"):
        check_slots(spec, 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr("medic.sweeps.spec.cpu_count", lambda: 8)
    assert check_slots(SweepSpec("s", grid={"lr": [0.1]}), 4) == [{"OMP_NUM_THREADS": "2", "MEDIC_SWEEP_THREADS": "2"}] * 4


def test_a_trial_is_the_defaults_then_the_fixed_options_then_its_values(project):
    from medic.config import TrainConfig
    from medic.sweeps.run import new_spec
    spec = new_spec(project, grid={"lr": [0.01, 0.02]}, fixed={"epochs": 7, "lr_gamma": 0.5})
    config = spec.trial_config({"lr": 0.02})
    assert config == dict(TrainConfig().to_dict(), epochs=7, lr_gamma=0.5, lr=0.02)
    assert spec.trials == 2 and spec.direction == "minimize"
    assert new_spec(project, space={"lr": "loguniform(1e-4,1e-2)"}, trials=3,
                    fixed={"val_fraction": 0.25, "monitor": "Val_Dice"}).direction == "maximize"


# -- a 2x2 grid on 2 slots, from 05_sweep.ipynb headless under papermill ----------------------------

@pytest.mark.slow
@pytest.mark.notebooks
def test_sweep_notebook_runs_a_2x2_grid_on_2_slots(project):
    import papermill as pm
    out = project / "05_sweep.out.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "05_sweep.ipynb"), str(out), kernel_name=KERNEL_NAME,
                        cwd=str(project), progress_bar=False, execution_timeout=600,
                        parameters=dict(grid={"lr": [0.001, 0.01], "batch_size": [2, 4]},
                                        fixed=dict(TINY_FIXED, epochs=2), slots=2, interactive=False,
                                        project_root=str(project)))
    sweep_id = the_sweep(project)
    folder = project / "analysis" / "sweeps" / sweep_id
    summary = pd.read_csv(folder / "summary.csv")
    assert list(summary["status"]) == ["completed"] * 4
    assert sorted(zip(summary["lr"], summary["batch_size"])) == [(0.001, 2), (0.001, 4), (0.01, 2), (0.01, 4)]
    assert (summary["epochs_done"] == 2).all() and summary["best"].notna().all()
    assert sorted(p.name for p in folder.glob("trial_*.ipynb")) == [f"trial_{k}.ipynb" for k in range(4)]
    for k, row in summary.iterrows():  # each trial notebook is the executed 01_train with its values
        executed = nbformat.read(folder / f"trial_{row['trial']}.ipynb", as_version=4)
        injected = next(c.source for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
        assert f"lr = {row['lr']}" in injected and f"batch_size = {row['batch_size']}" in injected
        assert "interactive = False" in injected and "nproc_per_node = 1" in injected
        side = read_sidecar(Project.at(project).sidecar(row["run_id"]))
        assert side["status"] == "completed" and side["sweep"] == sweep_id
        assert side["sweep_trial"] == row["trial"] and side["config"]["lr"] == row["lr"]
    table = runs(project)
    assert len(table) == 4 and set(table["sweep"]) == {sweep_id}
    chosen = compare_settings({"sweep": sweep_id, "project_root": str(project)})
    assert sorted(r.run_id for r in chosen["runs"]) == sorted(summary["run_id"])
    executed = nbformat.read(out, as_version=4)
    kinds = [k for c in executed.cells if c.cell_type == "code" for o in c.outputs for k in o.get("data", {})]
    assert "image/png" in kinds and "text/html" in kinds  # the final figure and table are kept
    assert (folder / "summary.png").is_file()


# -- a driver SIGKILLed mid-sweep, then resumed --------------------------------------------------------

@pytest.mark.slow
def test_a_killed_driver_is_resumed_without_training_any_trial_twice(project):
    # a TPE search of 2 trials: after the resume, the retried trials do not count as new ones
    driver = start_cli(project, "--space", "lr=loguniform(0.001,0.01)", "--trials", "2", "--slots", "2",
                       "--epochs", "20", *TINY)
    root = Project.at(project)

    def running_runs():
        try:
            sweep_id = the_sweep(project)
        except AssertionError:
            return None
        ids = [i for i in root.run_ids() if (read_sidecar(root.sidecar(i)) or {}).get("sweep") == sweep_id]
        return ids if len(ids) == 2 and all(len(epochs_of(project, i)) >= 2 for i in ids) else None

    alive_run, dead_run = wait_for(running_runs, 180, "two trials with two epochs each")
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    dead = attach(dead_run, project)  # one trial's training dies too (its node went away)
    for pid in [dead.pid]:
        send_signal(pid, signal.SIGKILL, group=True)
    wait_for(lambda: not pid_alive(dead.pid), 20, "the killed job to end")
    assert attach(alive_run, project).running  # launched jobs outlive their driver, by design
    sweep_id = the_sweep(project)

    done = sweep_cli(project, "--resume", sweep_id, "--slots", "2", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    # the surviving trial is followed, never restarted: re-attached while it trains, or kept when
    # it finished before the new driver looked (on a loaded machine its last epochs can win)
    assert (f"run {alive_run} is still training; re-attached" in done.stdout
            or f"run {alive_run} had completed; kept" in done.stdout), done.stdout
    assert f"run {dead_run} died; resumed from its checkpoint" in done.stdout
    summary = pd.read_csv(project / "analysis" / "sweeps" / sweep_id / "summary.csv")
    assert list(summary["status"]) == ["completed", "completed"]
    assert sorted(summary["run_id"]) == sorted([alive_run, dead_run])
    assert summary["lr"].between(0.001, 0.01).all() and list(summary["trial"]) == [0, 1]
    assert len(root.run_ids()) == 2  # no trial started again as a new run
    for run_id in (alive_run, dead_run):
        assert epochs_of(project, run_id) == list(range(1, 21))  # every epoch once
        assert read_sidecar(root.sidecar(run_id))["status"] == "completed"
    assert "resumed" not in read_sidecar(root.sidecar(alive_run))  # followed, never restarted
    # resumed, not restarted: the kill came after two epoch rows, so at least epoch 1's checkpoint
    # was whole (the kill may land between epoch 2's row and its checkpoint: then it continues
    # from epoch 1, and epoch 2 still appears once, as asserted above)
    assert read_sidecar(root.sidecar(dead_run))["resumed"][0]["from_epoch"] >= 1


# -- two drivers on one storage, and pruning ----------------------------------------------------------

@pytest.mark.slow
def test_two_drivers_share_one_storage_and_a_bad_trial_is_pruned(project):
    """Drivers A and B work one 3-point grid: each point runs once. The third point starts after a
    trial completed and is compared once both have; its learning rate is useless, so the median
    pruner stops it."""
    # two drivers on one 2-core machine: one thread per trial
    a = start_cli(project, "--grid", "lr=0.01,0.003,0.0000001", "--slots", "1", "--epochs", "12",
                  "--threads", "1", "--prune", "median", "--prune_startup", "2", *TINY)
    sweep_id = wait_for(lambda: (list((project / "analysis" / "sweeps").glob("sweep_*/study.db")) or [None])[0],
                        60, "the study").parent.name
    b = sweep_cli(project, "--resume", sweep_id, "--slots", "1", timeout=600)
    assert b.returncode == 0, b.stdout + b.stderr
    assert a.wait(timeout=600) == 0
    summary = pd.read_csv(project / "analysis" / "sweeps" / sweep_id / "summary.csv")
    assert sorted(summary["lr"]) == [1e-7, 0.003, 0.01]
    root = Project.at(project)
    assert len(root.run_ids()) == 3 and summary["run_id"].is_unique  # no point ran twice
    bad = summary[summary["lr"] == 1e-7].iloc[0]
    assert bad["status"] == "pruned" and bad["epochs_done"] < 12
    assert read_sidecar(root.sidecar(bad["run_id"]))["status"] == "stopped"  # stopped gracefully
    assert list(summary[summary["lr"] != 1e-7]["status"]) == ["completed", "completed"]
    study = json.loads((project / "analysis" / "sweeps" / sweep_id / "sweep.json").read_text())
    assert study["prune"] == "median" and study["prune_startup"] == 2
    assert " started (lr=" in b.stdout  # B ran a trial of A's sweep
