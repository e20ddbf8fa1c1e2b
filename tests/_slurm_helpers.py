"""A two-node SLURM cluster on this machine (tests/slurm/start_cluster.sh), started once per test
session and shared by every SLURM test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
START = HERE / "slurm" / "start_cluster.sh"
CLUSTER_DIR = Path(os.environ.get("MEDIC_SLURM_DIR", "/tmp/medic-slurm"))


def skip_reason() -> str | None:
    """Why the cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "the SLURM tests start slurmctld and slurmd, which needs root"
    missing = [c for c in ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol")
               if shutil.which(c) is None]
    if missing:
        return f"no {missing[0]} on PATH (apt-get install slurm-wlm munge)"
    return None


def _daemons_up() -> bool:
    for name in ("slurmctld.pid", "slurmd.n1.pid", "slurmd.n2.pid"):
        try:  # a zombie (never reaped in a container) is not up
            pid = int((CLUSTER_DIR / name).read_text())
            if ") Z " in Path(f"/proc/{pid}/stat").read_text():
                return False
        except (OSError, ValueError):
            return False
    return True


@pytest.fixture(scope="session")
def slurm_cluster():
    """``{"SLURM_CONF": path}`` of a running two-node cluster (nodes n1, n2, one CPU each);
    stopped at the end of the session unless it was running before."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    was_up = _daemons_up()
    env = dict(os.environ, MEDIC_SLURM_DIR=str(CLUSTER_DIR))
    proc = subprocess.run(["bash", str(START)], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"the test cluster did not start:\n{proc.stdout}\n{proc.stderr}")
    conf = proc.stdout.strip().rsplit("=", 1)[-1]
    yield {"SLURM_CONF": conf}
    if not was_up:
        subprocess.run(["bash", str(START), "stop"], env=env, capture_output=True, timeout=60)
