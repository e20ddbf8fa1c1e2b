"""What the batch script of a SLURM run asks of medic (``python -m medic.slurm.batch ACTION``):

    begin      the job starts (again): record its nodes and ``requeues`` (SLURM_RESTART_COUNT);
               print ``--resume <run id>`` when the run has a checkpoint to continue from; exit 1
               (nothing trains) once the run has been requeued more than --max_requeues times
    warn       USR2, --requeue_grace seconds before the time limit: ask the trainer, through the
               run's files, to save a checkpoint and exit for a requeue
    end CODE   the step has ended with CODE: requeue the job when the trainer checkpointed for
               it after a warning (scontrol requeue), end the chain as 'timeout' after the last
               allowed requeue, and record a job whose processes died without a word
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from medic.squeue import clean_env
from medic.store.control import request_stop
from medic.store.files import tail_lines
from medic.store.paths import Project, resume_points
from medic.store.sidecar import now_str, read_sidecar, update_sidecar


def restarts() -> int:
    value = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(value) if value.isdigit() else 0


def node_names() -> list[str]:
    """The job's nodes, by SLURM's names (``scontrol show hostnames`` of the node list)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST", "")
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], env=clean_env(),
                             capture_output=True, text=True, timeout=30)
        names = out.stdout.split()
    except (OSError, subprocess.SubprocessError):
        names = []
    return names or ([os.environ["SLURMD_NODENAME"]] if os.environ.get("SLURMD_NODENAME") else [])


def slurm_info(side: dict) -> dict:
    info = side.get("slurm")
    return dict(info) if isinstance(info, dict) else {}


def begin(project: Project, run_id: str) -> int:
    path = project.sidecar(run_id)
    side = read_sidecar(path) or {}
    info = slurm_info(side)
    limit = int((info.get("request") or {}).get("max_requeues", 5))
    count = restarts()
    info.update(job_id=os.environ.get("SLURM_JOB_ID", info.get("job_id")), nodes=node_names(), reason="",
                started=now_str())
    if count > limit:
        update_sidecar(path, status="timeout", requeues=count, slurm=info, end_time=now_str(),
                       message=f"requeued {count} times, more than --max_requeues {limit}: resume it "
                               f"with medic train --resume {run_id}")
        return 1
    changes = {"status": "starting"} if side.get("status") in (None, "queued", "starting", "running") else {}
    resume = bool(resume_points(project.checkpoint_dir(run_id)))
    if resume:  # the earlier allocation's processes are gone: the trainer may take the run over
        changes["requeued"] = side.get("requeued") or now_str()
    update_sidecar(path, requeues=count, slurm=info, **changes)
    if resume:
        print(f"--resume {run_id}")
    return 0


def warn(project: Project, run_id: str) -> int:
    path = project.sidecar(run_id)
    info = slurm_info(read_sidecar(path) or {})
    info["warned"] = time.time()
    update_sidecar(path, slurm=info)
    request_stop(project, run_id, "requeue", reason="time limit")
    return 0


def end(project: Project, run_id: str, code: int, early: bool = False) -> int:
    path = project.sidecar(run_id)
    side = read_sidecar(path) or {}
    info = slurm_info(side)
    status = side.get("status")
    limit = int((info.get("request") or {}).get("max_requeues", 5))
    job_id = os.environ.get("SLURM_JOB_ID", str(info.get("job_id", "")))
    # the trainer checkpointed for a requeue: it left the run to be continued (``requeued``)
    requeued = not early and (status == "queued" or (status == "running" and bool(side.get("requeued"))))
    if requeued and info.get("warned"):
        info.pop("warned", None)
        out = subprocess.run(["scontrol", "requeue", job_id], env=clean_env(), capture_output=True, text=True) \
            if restarts() < limit else None
        if out is None or out.returncode != 0:  # the chain ends here; --resume continues it
            why = f"time limit reached after {limit} requeues (--max_requeues)" if out is None else \
                f"checkpointed for a requeue, but scontrol requeue failed ({out.stderr.strip()})"
            update_sidecar(path, status="timeout" if out is None else "interrupted", slurm=info, end_time=now_str(),
                           message=f"{why}: resume it with medic train --resume {run_id}")
            return 0 if out is None else 1
        info["reason"] = "requeued before the time limit"
        update_sidecar(path, status="queued", slurm=info)
    elif requeued:  # a SIGTERM: SLURM requeues the job itself (preemption, scontrol requeue)
        update_sidecar(path, status="queued")
    elif status == "running":
        update_sidecar(path, status="interrupted", end_time=now_str(),
                       message=f"the training processes ended without a record (exit code {code})")
    elif status in (None, "starting") or (early and status == "queued"):
        output = Path(str(info.get("output", ""))).with_name(f"slurm_{run_id}_{job_id}.out")
        last = " | ".join(tail_lines(output, 3)) if output.name else ""
        update_sidecar(path, status="failed", end_time=now_str(),
                       message=f"the job ended (exit code {code}) before training started" + (f": {last}" if last else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medic.slurm.batch")
    parser.add_argument("action", choices=("begin", "warn", "end"))
    parser.add_argument("code", nargs="?", type=int, default=0)
    parser.add_argument("--early", action="store_true", help="the script ended before the training step")
    parser.add_argument("--root", required=True)
    parser.add_argument("--run", required=True)
    args = parser.parse_args(argv)
    project = Project.at(args.root)
    if args.action == "begin":
        return begin(project, args.run)
    if args.action == "warn":
        return warn(project, args.run)
    return end(project, args.run, args.code, args.early)


if __name__ == "__main__":
    sys.exit(main())
