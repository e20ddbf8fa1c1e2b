"""One trial of a sweep as a SLURM job (``medic sweep --launcher slurm``): the job runs papermill
on the trial notebook on its compute node, where the notebook's own training runs inside the
allocation. The driver follows the run's epoch CSV as for a local trial, and the job through
``squeue`` (one call per refresh for all trials).

The trial's run id is fixed when it is submitted and travels with the job (``MEDIC_RUN_ID``), so
a requeued job (time limit, preemption) continues the same trial as the same run: the batch
script's begin hook passes ``--resume <run id>`` to the notebook when the run has a checkpoint.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from typing import Any

from medic import squeue
from medic.errors import MedicError
from medic.jobs import attach
from medic.slurm.options import SlurmOptions
from medic.slurm.script import extra_options, job_script
from medic.slurm.submit import claim_record, output_pattern, record_job, require_sbatch, sbatch, source_path
from medic.store.files import write_json_atomic
from medic.store.paths import resume_points
from medic.store.sidecar import read_sidecar
from medic.store.status import FINISHED
from medic.sweeps.spec import DRIVER_JOB_ENV, sweep_dir
from medic.sweeps.trial import TrialRun, trial_notebook


class SlurmTrialRun(TrialRun):
    """A trial whose notebook runs as a SLURM job; ``job_id`` is SLURM's (the same across requeues)."""

    def __init__(self, *args: Any, slurm: SlurmOptions, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.slurm = slurm
        self.job_id = ""

    def start(self, previous: dict[str, Any]) -> str:
        """Submit the trial, or take over the job of a trial whose driver died: re-attached while
        the job waits or runs, kept when its run completed, resubmitted to continue from the run's
        checkpoint, else restarted as a new run. Returns a line saying which."""
        old_run, old_job = previous.get("run_id") or "", str(previous.get("job_id") or "")
        if old_run:
            state = squeue.job(old_job, refresh=True) if old_job else None
            if state is not None and (state.waiting or state.alive):
                self.mode, self.run_id, self.job_id = "attached", old_run, old_job
                self._record()
                return f"trial {self.k}: run {old_run} (SLURM job {old_job}, {state.shown}) re-attached"
            self.run_id = old_run
            status = self.run_status()
            if status == "completed":
                self.job_id = old_job
                return self._kept(old_run)
            if resume_points(self.project.checkpoint_dir(old_run)):
                self.mode = "resumed"
                self._launch(resume=old_run)
                how = "was stopped" if status == "stopped" else "died"
                return f"trial {self.k}: run {old_run} {how}; resumed from its checkpoint as SLURM job {self.job_id}"
            self.mode = "restarted"
        return self._start_new(old_run)

    def _where(self) -> str:
        return f" as SLURM job {self.job_id}"

    def parameters(self, resume: str = "") -> dict[str, Any]:
        values = super().parameters("")  # a resume is the job's to decide, each time it starts
        if "nproc_per_node" not in self.spec.fixed and self.slurm.gpus_per_node:
            values["nproc_per_node"] = self.slurm.gpus_per_node
        if "threads" not in self.spec.fixed and self.slurm.cpus_per_task:
            values["threads"] = self.slurm.cpus_per_task
        return values

    def script(self) -> str:
        """The trial's batch script: papermill on the trial notebook, inside the allocation."""
        q = shlex.quote
        out = trial_notebook(self.root, self.spec.sweep_id, self.k)
        python = os.path.abspath(sys.executable)  # not resolved: a venv's python is a link into it
        step = [f"{q(python)} -m medic.sweeps.execute {q(self.spec.notebook)} {q(str(out))} "
                f"{q(str(out.with_suffix('.json')))} {q(str(self.root))} $RESUME &"]
        return job_script(self.slurm, self.run_id, str(self.root), python, output_pattern(self.project, self.run_id),
                          step, source_path(), f"trial {self.k} of {self.spec.sweep_id}; written by medic sweep",
                          exports={"MEDIC_SWEEP": self.spec.sweep_id, "MEDIC_SWEEP_TRIAL": str(self.k),
                                   "MEDIC_SWEEP_RUN_ID": self.run_id})

    def _launch(self, resume: str = "") -> None:
        out = trial_notebook(self.root, self.spec.sweep_id, self.k)
        write_json_atomic(out.with_suffix(".json"), self.parameters())
        sidecar = self.project.sidecar(self.run_id)
        old = read_sidecar(sidecar) if resume else None
        request = {k: v for k, v in self.slurm.to_dict().items() if k not in ("launcher", "dry_run")}
        claim = claim_record(self.project, self.run_id, request, output_pattern(self.project, self.run_id))
        if old is None:  # the driver's claim becomes the scheduler's: no local process names it
            config = self.spec.trial_config(self.values)
            claim.update(run_id=self.run_id, epochs=config["epochs"], epochs_done=0, config=config, start_time=None,
                         pid=None, sweep=self.spec.sweep_id, sweep_trial=self.k)
        write_json_atomic(sidecar, {**(read_sidecar(sidecar) or {}), **claim})
        self.project.make_dirs()  # SLURM writes the output file into log/, and does not make folders
        script = self.script()
        try:
            self.job_id = sbatch(script, self.root)
        except Exception:  # refused: the run's record as it was (a new trial's claim goes)
            if old is None:
                sidecar.unlink(missing_ok=True)
            else:
                write_json_atomic(sidecar, old)
            raise
        record_job(self.project, self.run_id, self.job_id, script)
        self._record()

    def _record(self) -> None:
        super()._record()
        self.trial.set_user_attr("job_id", self.job_id)

    def slurm_state(self) -> squeue.JobState | None:
        return squeue.job(self.job_id)

    def finished(self) -> bool:
        """The run has ended and so has its job (papermill has written the notebook)."""
        if self.run_status() not in FINISHED:
            return False
        state = self.slurm_state()
        return state is None or not (state.waiting or state.alive)

    def stop(self, timeout: float = 60.0) -> threading.Thread:
        """Stop the trial: a job still queued is cancelled; a running one is asked through the
        run's files to save a checkpoint and stop (``medic stop``'s way), in a thread."""
        self.stopping = True

        def work():
            job = attach(self.run_id, self.root)
            job.stop(timeout=timeout)

        thread = threading.Thread(target=work, name=f"stop-trial-{self.k}", daemon=True)
        thread.start()
        return thread


PROBE = "#!/bin/bash\ntrue\n"


def check_cluster(slurm: SlurmOptions, slots: int, root) -> None:
    """Ask SLURM, submitting nothing (``sbatch --test-only``), whether it takes a trial's job at
    all, and whether the partition can ever run ``slots`` of them at once; its own message when not."""
    require_sbatch()
    if slurm.nodes > 1:
        raise MedicError(f"--nodes {slurm.nodes}: a sweep's trial runs on one node (its notebook starts the "
                         "training there); use --gpus_per_node for more processes per trial")
    where = [f"--{n}={getattr(slurm, n)}" for n in ("partition", "time", "account", "qos") if getattr(slurm, n)]
    where += extra_options(slurm.slurm_args)
    task = [f"--cpus-per-task={max(1, slurm.cpus_per_task)}"]
    task += [f"--gpus-per-task={slurm.gpus_per_node}"] if slurm.gpus_per_node else []
    sbatch(PROBE, root, "--test-only", "--nodes=1", "--ntasks=1", *where, *task,
           *([f"--mem={slurm.mem}"] if slurm.mem else []))
    if slots > 1:  # the trials' tasks, as SLURM would place them side by side
        try:
            sbatch(PROBE, root, "--test-only", f"--ntasks={slots}", *where, *task)
        except MedicError as err:
            raise MedicError(f"--slots {slots}: partition {slurm.partition or '(the default)'} can never run "
                             f"{slots} trial jobs at once; SLURM says: {str(err).removeprefix('sbatch refused the job: ')}"
                             ) from None


def driver_script(root, sweep_id: str, slots: int, storage: str, slurm: SlurmOptions) -> str:
    """The batch script of a sweep's driver as a small job (one CPU, no GPU): ``medic sweep
    --resume``. Requeued, it re-attaches to its trials' jobs."""
    q = shlex.quote
    python = os.path.abspath(sys.executable)
    folder = sweep_dir(root, sweep_id)
    options = [f"--job-name=medic_{sweep_id}", "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
               f"--output={folder / 'driver.log'}", "--open-mode=append", "--requeue"]
    options += [f"--{n}={getattr(slurm, n)}" for n in ("partition", "account", "qos") if getattr(slurm, n)]
    src = source_path()
    argv = [python, "-m", "medic.cli", "sweep", "--resume", sweep_id, "--slots", str(slots), "--root", str(root)]
    argv += ["--storage", storage] if storage else []
    return "\n".join(["#!/bin/bash", f"# the driver of {sweep_id}; written by medic sweep --driver_on_slurm",
                      *[f"#SBATCH {o}" for o in options], "",
                      f"export {DRIVER_JOB_ENV}=1 PYTHONUNBUFFERED=1"
                      + (f" PYTHONPATH={q(src)}${{PYTHONPATH:+:$PYTHONPATH}}" if src else ""),
                      f"cd {q(str(root))} || exit 1",
                      "exec " + " ".join(q(a) for a in argv), ""])


def submit_driver(root, sweep_id: str, slots: int, storage: str, slurm: SlurmOptions) -> str:
    """Submit the driver; its job id is kept in the sweep folder (``driver_job.json``)."""
    job_id = sbatch(driver_script(root, sweep_id, slots, storage, slurm), root)
    write_json_atomic(sweep_dir(root, sweep_id) / "driver_job.json", {"job_id": job_id})
    return job_id


def driver_job(root, sweep_id: str) -> squeue.JobState | None:
    """The driver's job while SLURM still lists it waiting or running, else None."""
    info = read_sidecar(sweep_dir(root, sweep_id) / "driver_job.json") or {}
    state = squeue.job(info.get("job_id")) if info.get("job_id") else None
    return state if state is not None and (state.waiting or state.alive) else None
