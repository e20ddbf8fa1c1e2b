"""The own-loop notebook, executed by papermill: a plain PyTorch loop with MetricsLogger started
as a process of its own and followed by the live monitor until the logger marks it completed."""

import json

import nbformat
import papermill as pm
import pytest

from conftest import ROOT
from medic.notebooks import KERNEL_NAME, ensure_kernel

NOTEBOOK = ROOT / "notebooks" / "06_own_loop.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert code[0]["metadata"]["tags"] == ["parameters"] and nb["metadata"]["kernelspec"]["name"] == KERNEL_NAME


@pytest.mark.notebooks
@pytest.mark.slow
def test_own_loop_runs_as_a_process_and_the_monitor_follows_it_to_the_end(tmp_path, monkeypatch):
    ensure_kernel()
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    (tmp_path / "metrics").mkdir()
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out), kernel_name=KERNEL_NAME, cwd=str(tmp_path), progress_bar=False,
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
