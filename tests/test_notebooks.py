"""The four notebooks, executed by papermill on the ``medic`` kernel, each in its own folder."""

from __future__ import annotations

import ast
import json
import os
import subprocess

import nbformat
import papermill as pm
import pytest

from _nb_helpers import PY, REPO, child_env, make_run, start_writer
from medic.jobs import pid_alive
from medic.notebooks import KERNEL_NAME, NOTEBOOKS, ensure_kernel, project_root, run_all
from medic.store.paths import Project, reserve_run_id
from medic.store.sidecar import read_sidecar

pytestmark = pytest.mark.notebooks
NB_DIR = REPO / "notebooks"
TINY_TRAINING = dict(epochs=2, num_samples=16, image_size=32, batch_size=4, nproc_per_node=2,
                     log_batch_metrics=True, log_interval=2, val_fraction=0.25)


@pytest.fixture(scope="session", autouse=True)
def medic_kernel():
    """The ``medic`` kernel registered in this venv, able to import medic from this checkout."""
    ensure_kernel()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), old) if p)
    yield KERNEL_NAME
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def execute(name: str, cwd, **parameters):
    out = cwd / f"{name}.out.ipynb"
    pm.execute_notebook(str(NB_DIR / f"{name}.ipynb"), str(out), kernel_name=KERNEL_NAME, cwd=str(cwd),
                        parameters=dict(interactive=False, **parameters), execution_timeout=300,
                        progress_bar=False)
    return nbformat.read(out, as_version=4)


def outputs(nb, mime: str | None = None) -> list:
    found = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    return [o for o in found if mime is None or mime in o.get("data", {})]


def text_of(nb) -> str:
    parts = []
    for o in outputs(nb):
        parts.append(o.get("text", ""))
        parts.append(o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean_with_one_literal_parameters_cell(name):
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == KERNEL_NAME
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]
    names = []
    for line in tagged[0].source.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        stmt = ast.parse(line).body[0]
        assert isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name), line
        ast.literal_eval(stmt.value)  # plain literals only: papermill does not recompute expressions
        assert "  # " in line, f"no help text: {line}"
        names.append(stmt.targets[0].id)
    assert "interactive" in names and "project_root" in names
    inspected = pm.inspect_notebook(str(NB_DIR / f"{name}.ipynb"))
    assert list(inspected) == names and all(p["help"] for p in inspected.values())
    assert inspected["interactive"]["default"] == "True"
    assert "nb." in code[1].source  # the next cell checks the parameters through medic


def test_project_root_is_found_from_the_notebooks_folder(tmp_path):
    (tmp_path / "medic").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    assert project_root("", tmp_path / "notebooks") == tmp_path
    other = tmp_path / "elsewhere" / "deeper"
    other.mkdir(parents=True)
    (tmp_path / "elsewhere" / "metrics").mkdir()
    assert project_root("", other) == tmp_path / "elsewhere"
    assert project_root(str(other), tmp_path) == other
    assert project_root("", REPO / "notebooks") == REPO


def test_make_notebooks_trains_then_monitors_analyses_and_compares(tmp_path):
    """What ``make notebooks`` does, with a tiny two-process DDP run."""
    root = tmp_path / "project"
    root.mkdir()
    written = run_all("analysis/notebooks", root, TINY_TRAINING)
    assert [p.name for p in written] == [f"{n}.ipynb" for n in NOTEBOOKS]
    assert all(p.parent == root / "analysis" / "notebooks" for p in written)
    project = Project.at(root)
    (run_id,) = project.run_ids()
    rows = project.epoch_csv(run_id).read_text().splitlines()
    assert ",Val_Loss,Val_Dice,Val_Dice_class_1,Samples_Per_Second," in rows[0] and [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    assert read_sidecar(project.sidecar(run_id))["status"] == "completed"
    info = json.loads((project.log / f"launcher_{run_id}.pid").read_text())
    assert info["returncode"] == 0 and not pid_alive(info["pid"], start_ticks=info["start_ticks"])

    train, monitor, analyze, compare = (nbformat.read(p, as_version=4) for p in written)
    # 01: the live figure, the last prediction strip, the three analysis figures, the summary
    # table, the outcome
    assert len(outputs(train, "image/png")) == 5
    assert "completed" in text_of(train) and f"run {run_id} completed" in text_of(train)
    assert "Training Analysis Report" in text_of(train) and "Batch Analysis Report" in text_of(train)
    for name in (f"training_analysis_epoch_metrics_{run_id}.png", f"training_report_epoch_metrics_{run_id}.txt",
                 f"batch_analysis_batch_metrics_{run_id}.png"):
        assert (project.analysis / name).exists(), name
    # 02 on the finished run: its final figure, the last prediction strip and the summary
    assert len(outputs(monitor, "image/png")) == 2 and "2/2" in text_of(monitor)
    # 03: figures, the describe() table and the best epochs
    assert len(outputs(analyze, "image/png")) == 3
    html = "".join(o.data["text/html"] for o in outputs(analyze, "text/html"))
    assert "std" in html and "Avg_Loss" in html
    # 04 with a single run still draws it
    assert len(outputs(compare, "image/png")) == 1 and run_id in text_of(compare)


def test_train_notebook_fails_loudly_on_a_bad_value_or_an_unknown_parameter(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as err:
        execute("01_train", tmp_path, epochs=-1)
    assert err.value.ename == "MedicError" and "epochs must be > 0, got -1" in err.value.evalue
    with pytest.raises(pm.PapermillExecutionError) as err:
        execute("01_train", tmp_path, epoch=3)
    assert err.value.ename == "MedicError"
    assert "unknown parameter 'epoch'; did you mean 'epochs'?" in err.value.evalue
    assert not (tmp_path / "metrics").exists()  # nothing was started
    # a run that starts and then fails fails the notebook, with the job's own words
    with pytest.raises(pm.PapermillExecutionError) as err:
        execute("01_train", tmp_path, data=str(tmp_path / "no-such-folder"), epochs=1)
    assert err.value.ename == "MedicError" and "ended with exit code 2" in err.value.evalue
    assert "no-such-folder does not exist" in err.value.evalue


def test_monitor_notebook_follows_a_run_being_written(tmp_path):
    root = tmp_path / "project"
    project = Project.at(root)
    run_id = reserve_run_id(project)  # creates metrics/: the notebook finds the root from notebooks/
    (root / "notebooks").mkdir()
    writer = start_writer(root, run_id, epochs=8, interval=0.5)
    try:
        nb = execute("02_monitor", root / "notebooks", refresh_seconds=0.2)
    finally:
        writer.wait(timeout=60)
    assert len(outputs(nb, "image/png")) == 1
    text = text_of(nb)
    assert f"run {run_id}: completed" in text and "Epoch 8/8" in text
    assert text.count("Avg_Loss") >= 8


def test_monitor_notebook_names_a_missing_run_and_a_wrong_type(tmp_path):
    make_run(tmp_path, epochs=1)
    with pytest.raises(pm.PapermillExecutionError) as err:
        execute("02_monitor", tmp_path, run_id="20000101_000000", refresh_seconds="fast")
    assert err.value.ename == "MedicError" and "refresh_seconds must be float" in err.value.evalue
    with pytest.raises(pm.PapermillExecutionError) as err:
        execute("02_monitor", tmp_path, run_id="20000101_000000")
    assert err.value.ename == "RunNotFoundError" and "20000101_000000" in err.value.evalue


def test_compare_notebook_overlays_runs_and_names_the_options_that_differ(tmp_path):
    first = make_run(tmp_path, epochs=3, lr=0.001)
    second = make_run(tmp_path, epochs=4, lr=0.01)
    nb = execute("04_compare", tmp_path / "metrics")  # any folder below the project will do
    assert len(outputs(nb, "image/png")) == 1
    text = text_of(nb)
    assert first in text and second in text
    html = "".join(o.data["text/html"] for o in outputs(nb, "text/html"))
    assert "lr" in html and "0.01" in html


def test_run_all_command_reports_a_failing_notebook_in_one_line(tmp_path):
    out = subprocess.run([PY, "-m", "medic.notebooks", "run-all", "--root", str(tmp_path), "--epochs", "-1"],
                         env=child_env(), capture_output=True, text=True, timeout=240)
    assert out.returncode == 2
    # one line from medic, no traceback (the kernel's own start-up warning aside)
    ours = [line for line in out.stderr.splitlines() if line.startswith("medic:")]
    assert len(ours) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "MedicError: option epochs must be > 0, got -1" in ours[0]
    executed = nbformat.read(tmp_path / "analysis" / "notebooks" / "01_train.ipynb", as_version=4)
    assert executed.metadata.papermill.exception is True


# -- the own-loop notebook: a plain PyTorch loop with MetricsLogger, as a process of its own, followed
# by the live monitor until the logger marks it completed

OWN_LOOP = NB_DIR / "06_own_loop.ipynb"
def test_own_loop_notebook_is_committed_without_outputs():
    nb = json.loads(OWN_LOOP.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert code[0]["metadata"]["tags"] == ["parameters"] and nb["metadata"]["kernelspec"]["name"] == KERNEL_NAME


@pytest.mark.notebooks
@pytest.mark.slow
def test_own_loop_runs_as_a_process_and_the_monitor_follows_it_to_the_end(tmp_path, monkeypatch):
    ensure_kernel()
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    (tmp_path / "metrics").mkdir()
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(OWN_LOOP), str(out), kernel_name=KERNEL_NAME, cwd=str(tmp_path), progress_bar=False,
                        parameters={"epochs": 3, "seconds_per_epoch": 0.0, "interactive": False,
                                    "project_root": str(tmp_path)}, execution_timeout=300)
    text = "\n".join(o.get("text", "") + json.dumps(o.get("data", {}))
                     for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []))
    (sidecar,) = (tmp_path / "metrics").glob("run_*.json")
    side = json.loads(sidecar.read_text())
    assert side["status"] == "completed" and side["epochs"] == 3 and side["epochs_done"] == 3
    assert side["config"]["epochs"] == 3 and side["config"]["lr"] == 0.1
    assert f"run {side['run_id']}" in text and "exit code 0" in text and "completed" in text
    assert "image/png" in text  # the monitor's final figure
