"""Shared test set-up: the project's interpreter and a clean environment for child processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def child_env(**extra) -> dict:
    """The environment for a medic process in a test: English, unbuffered, few threads each."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIC_", "LC_", "TORCHELASTIC"))}
    env.update(LANG="C.UTF-8", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


@pytest.fixture
def project(tmp_path) -> Path:
    """An empty project root (the working directory of a run)."""
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def runs_3d(tmp_path_factory):
    """Two finished 1-process 3D runs in one project (an nnU-Net layout of 3 one-channel volumes),
    trained once per session: ``first`` at lr 0.02 with batch metrics, ``second`` at lr 0.005,
    both monitoring Val_Dice. The figures test writes its analysis/ into the project; the
    predict test writes outside it."""
    from types import SimpleNamespace

    from _train_helpers import train
    from _volume_helpers import make_nnunet
    base = tmp_path_factory.mktemp("runs3d")
    data = make_nnunet(base / "Dataset001_Toy", n=3, shape=(32, 32, 16), channels=("T1",))
    project = base / "project"
    project.mkdir()
    common = ["--data", str(data), "--batch_size", "2", "--val_fraction", "0.34", "--monitor", "Val_Dice",
              "--lr", "0.02"]
    train(project, *common, "--epochs", "2", "--log_batch_metrics", "--log_interval", "1")
    train(project, *common, "--epochs", "2", "--lr", "0.005", "--log_interval", "3")
    first, second = sorted(p.name[len("epoch_metrics_"):-4] for p in (project / "metrics").glob("epoch_*.csv"))
    return SimpleNamespace(data=data, project=project, first=first, second=second)


# -- the fault suite (tests/test_faults_*.py): one reference run and one summary for all its files --

@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """An uninterrupted 2-process run that the kill, stop and bad-input tests compare with or
    copy; trained once per session. Tests only read it (copy it to change anything)."""
    from _fault_helpers import make_reference
    return make_reference(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="session")
def fault_summary(request):
    """After the session: the fault suite's summary line, in the terminal and in test-artifacts/."""
    import time
    from _fault_helpers import summary_line, write_summary
    start = time.monotonic()
    yield
    line = summary_line(time.monotonic() - start)
    write_summary(line)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        print(line)
    elif capture is not None:
        with capture.global_and_fixture_disabled():  # else the line lands in the captured output
            reporter.write_line("\n" + line)
    else:
        reporter.write_line(line)
