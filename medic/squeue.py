"""SLURM job facts, from ``squeue`` (no accounting database is needed, so no ``sacct``): a job's
state, why it waits, and its nodes.

A listing of many runs asks ``squeue`` once for all of this user's jobs, and the answer is kept
for ``CACHE_S`` seconds: the scheduler is a shared service, and a monitor that refreshes every
second must not call it per run per refresh. A job that ended leaves ``squeue`` after the
cluster's ``MinJobAge`` (300 s by default); until then it shows in a final state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

CACHE_S = 5.0
# the states of a job that may still train (or will, once it starts again)
WAITING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD", "SUSPENDED")
ALIVE = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING")


@dataclass(frozen=True)
class JobState:
    """One job as ``squeue`` shows it."""

    job_id: str
    state: str     # PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, FAILED, ...
    reason: str    # why it waits (Priority, Resources, BeginTime) or None
    nodes: str     # the node list (n[1-2]) once it runs

    @property
    def waiting(self) -> bool:
        return self.state in WAITING

    @property
    def alive(self) -> bool:
        return self.state in ALIVE

    @property
    def shown(self) -> str:
        """``PENDING (Priority)``, ``RUNNING``: the state, and why it waits when it does."""
        return self.state + (f" ({self.reason})" if self.reason not in ("", "None") else "")


_cache: dict[str, object] = {"at": -1e9, "jobs": None}


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a SLURM command: without the ``SLURM_*`` variables inherited from a
    job this process runs in (JupyterLab in an Open OnDemand job), which would otherwise make a
    new job inherit that job's settings; ``SLURM_CONF`` (where the cluster's config is) stays."""
    env = dict(os.environ if env is None else env)
    return {k: v for k, v in env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}


def available() -> bool:
    """Whether ``squeue`` is on PATH (a laptop that reads a cluster's files has none)."""
    return shutil.which("squeue") is not None


def jobs(refresh: bool = False) -> dict[str, JobState] | None:
    """This user's jobs by id, from one ``squeue`` call at most every ``CACHE_S`` seconds; None
    when ``squeue`` is missing or fails (then nothing is known about any job)."""
    now = time.monotonic()
    if not refresh and now - float(_cache["at"]) < CACHE_S:
        return _cache["jobs"]  # type: ignore[return-value]
    found: dict[str, JobState] | None = None
    if available():
        try:
            out = subprocess.run(["squeue", "-h", "-a", "--me", "-t", "all", "-o", "%i|%T|%r|%N"],
                                 env=clean_env(), capture_output=True, text=True, timeout=20)
            if out.returncode == 0:
                found = {}
                for line in out.stdout.splitlines():
                    parts = line.strip().split("|")
                    if len(parts) == 4:
                        found[parts[0]] = JobState(*parts)
        except (OSError, subprocess.SubprocessError):
            found = None
    _cache.update(at=now, jobs=found)
    return found


def job(job_id: str | int | None, refresh: bool = False) -> JobState | None:
    """One job's state; None when it is unknown to ``squeue`` (ended long ago) or ``squeue`` is
    unavailable (tell the two apart with ``jobs()``)."""
    listing = jobs(refresh)
    return None if listing is None or job_id in (None, "") else listing.get(str(job_id))


def cancel(job_id: str | int, signal: str = "") -> str:
    """``scancel`` the job (or send it ``signal``); returns scancel's error text, empty on success."""
    cmd = ["scancel"] + ([f"--signal={signal}"] if signal else []) + [str(job_id)]
    try:
        out = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    jobs(refresh=True)
    return "" if out.returncode == 0 else (out.stderr.strip() or f"scancel exited with {out.returncode}")
