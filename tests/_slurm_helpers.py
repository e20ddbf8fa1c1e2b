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


def medic(cwd: Path, *args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """``medic ARGS`` in ``cwd`` (the worktree's medic, the cluster's SLURM_CONF in ``env``)."""
    import sys
    return subprocess.run([sys.executable, "-m", "medic.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def submit(cwd: Path, *args: str, env: dict) -> tuple[str, str]:
    """``medic train --launcher slurm ARGS``: the run id and job id it prints."""
    import re
    proc = medic(cwd, "train", "--launcher", "slurm", *args, env=env)
    found = re.search(r"run (\S+): SLURM job (\d+) submitted", proc.stdout)
    assert proc.returncode == 0 and found, f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return found.group(1), found.group(2)


def job_state(job_id: str, env: dict) -> str:
    """The job's state in squeue, or '' once squeue no longer lists it."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], env=env,
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def wait_for(condition, timeout: float, every: float = 0.5, what: str = ""):
    """Poll ``condition()`` until it returns something true; fail after ``timeout`` seconds."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")


def job_done(job_id: str, env: dict, timeout: float = 180) -> None:
    """Wait until the job has ended for good (no longer pending, running or completing)."""
    wait_for(lambda: job_state(job_id, env) not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING",
                                                    "REQUEUED", "SUSPENDED"),
             timeout, every=1.0, what=f"job {job_id} to end")
