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
