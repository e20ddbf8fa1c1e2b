"""Submit a training run to SLURM: claim the run, hand the batch script to ``sbatch``, return.

The run is claimed before submission (its sidecar, status ``queued``, with ``launcher: slurm``
and the request), so that the job, its monitors and ``medic runs`` agree on it from the start.
When ``sbatch`` refuses, everything the submission created is removed again, and an existing
run's record (``--resume``) is put back as it was.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import medic
from medic.config import TrainConfig
from medic.errors import MedicError, RunNotFoundError
from medic.slurm.options import SlurmOptions
from medic.slurm.script import batch_script
from medic.squeue import clean_env, job
from medic.store.files import write_atomic, write_json_atomic
from medic.store.paths import OUTPUT_DIRS, Project, reserve_run_id, resumed_run_id
from medic.store.sidecar import now_str, read_sidecar, update_sidecar
from medic.store.status import ACTIVE, effective_status


def source_path() -> str:
    """The folder medic is imported from when it is not installed (a source checkout): the job
    must run this medic too."""
    src = str(Path(medic.__file__).resolve().parent.parent)
    return "" if src in site.getsitepackages() else src


def output_pattern(project: Project, run_id: str) -> str:
    return str(project.log / f"slurm_{run_id}_%j.out")


def submit(cfg: TrainConfig, slurm: SlurmOptions, explicit: set[str], out=print) -> int:
    """Submit ``cfg`` as a SLURM batch job (or print its script, ``--dry_run``). The input has
    been checked (``medic.train.launch.checks.check_before_start``). Prints the run id and the job id."""
    project = Project.at(cfg.output_dir or None)
    cfg.output_dir = str(project.root)
    if "nproc_per_node" not in explicit and slurm.gpus_per_node:
        cfg.nproc_per_node = slurm.gpus_per_node
    python = os.path.abspath(sys.executable)  # not resolved: a venv's python is a link into it
    if slurm.dry_run:
        run_id = os.environ.get("MEDIC_RUN_ID") or (resumed_run_id(project, cfg.resume) if cfg.resume else "<run id>")
        out(batch_script(cfg, slurm, run_id, str(project.root), python, output_pattern(project, run_id),
                         source_path()))
        return 0
    require_sbatch()
    old = None
    if cfg.resume:
        run_id = resumed_run_id(project, cfg.resume)
        old = read_sidecar(project.sidecar(run_id))
        if old is None and not project.epoch_csv(run_id).exists():
            raise RunNotFoundError(f"--resume: run {run_id} does not exist in {project.metrics}")
        status = effective_status(old)
        if status in ACTIVE:
            where = f" (SLURM job {old['slurm'].get('job_id')})" if isinstance((old or {}).get("slurm"), dict) else ""
            raise MedicError(f"run {run_id} is still {status}{where}; stop it first: medic stop {run_id}")
    made = [d for d in OUTPUT_DIRS if not (project.root / d).exists()]
    run_id = run_id if cfg.resume else (os.environ.get("MEDIC_RUN_ID") or reserve_run_id(project))
    output = output_pattern(project, run_id)
    script = batch_script(cfg, slurm, run_id, str(project.root), python, output, source_path())
    request = {k: v for k, v in slurm.to_dict().items() if k not in ("launcher", "dry_run")}
    request["nproc_per_node"] = cfg.nproc_per_node
    claim = claim_record(project, run_id, request, output)
    if old is None:
        claim.update(run_id=run_id, epochs=cfg.epochs, epochs_done=0, config=cfg.to_dict(), start_time=None)
    write_json_atomic(project.sidecar(run_id), {**(old or {}), **claim})
    project.make_dirs()  # SLURM writes the output file into log/, and does not make folders
    try:
        job_id = sbatch(script, project.root)
    except MedicError:
        undo(project, run_id, old, made)
        raise
    state = record_job(project, run_id, job_id, script)
    out(f"run {run_id}: SLURM job {job_id} submitted"
        + (f" ({state.state.lower()}, {state.reason})" if state is not None and state.reason not in ("", "None")
           else f" ({state.state.lower()})" if state is not None else "")
        + f"; its output goes to {output.replace('%j', job_id)}")
    return 0


def claim_record(project: Project, run_id: str, request: dict, output: str) -> dict:
    """The sidecar fields of a run handed to SLURM, before its job id is known. ``claim`` False:
    the record is the scheduler's now, which a failing start must not give back."""
    return {"status": "queued", "claim": False, "launcher": "slurm", "requeues": 0, "end_time": None, "message": "",
            "slurm": {"job_id": None, "request": request, "nodes": [], "reason": "submitted",
                      "output": output, "script": str(project.log / f"slurm_{run_id}.sh"),
                      "submitted": now_str()}}


def record_job(project: Project, run_id: str, job_id: str, script: str):
    """Keep the submitted script beside the run's logs and its job id in the run's record; the
    job's state in ``squeue`` (None when it is not listed)."""
    write_atomic(project.log / f"slurm_{run_id}.sh", script)
    state = job(job_id, refresh=True)
    sidecar = project.sidecar(run_id)
    info = dict((read_sidecar(sidecar) or {}).get("slurm") or {})
    info.update(job_id=job_id, reason=state.reason if state is not None else "")
    update_sidecar(sidecar, slurm=info)
    return state


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise MedicError("--launcher slurm: no sbatch on PATH (run this on a SLURM login node, or load "
                         "SLURM's module first)")


def sbatch(script: str, cwd: Path, *options: str) -> str:
    """Hand ``script`` to ``sbatch`` (with ``options`` before it); the job id, or a ``MedicError``
    with SLURM's own message when it refuses (with ``--test-only``: an empty id on success)."""
    try:
        proc = subprocess.run(["sbatch", "--parsable", *options], input=script, env=clean_env(), cwd=cwd,
                              capture_output=True, text=True, timeout=120)
        refused = proc.returncode != 0
        message = (proc.stderr.strip().splitlines() or [f"sbatch exited with code {proc.returncode}"])[-1]
    except (OSError, subprocess.SubprocessError) as err:
        refused, message = True, str(err)
    if refused:
        message = message.removeprefix("sbatch: error: ").removeprefix("allocation failure: ")
        raise MedicError(f"sbatch refused the job: {message}")
    return "" if "--test-only" in options else proc.stdout.strip().split(";")[0]


def undo(project: Project, run_id: str, old: dict | None, made: list[str]) -> None:
    """Take back a refused submission: the claim (or the resumed run's record as it was) and the
    folders it made."""
    if old is not None:
        write_json_atomic(project.sidecar(run_id), old)
    else:
        for path in (project.sidecar(run_id), project.epoch_csv(run_id)):
            path.unlink(missing_ok=True)
    for name in made:
        try:
            (project.root / name).rmdir()
        except OSError:
            pass
