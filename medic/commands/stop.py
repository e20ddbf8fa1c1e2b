"""``medic stop [RUN_ID]``: stop a running training job (default: the newest running one); it
saves a checkpoint and its run is marked stopped (``medic.jobs.Job.stop``). It works from any
host that shares the project folder: the request is a file next to the run, which the trainer
reads at its next progress interval; where the job's process is local, a signal is sent too.
``medic stop SWEEP_ID`` stops a sweep's drivers, which stop their trials the same way."""

from __future__ import annotations


from medic.cli import ArgParser
from medic.errors import RunNotFoundError
from medic.jobs import attach
from medic.store.paths import Project
from medic.store.status import ACTIVE, run_status


def main(argv: list[str] | None = None) -> int:
    """``medic stop [RUN_ID]``: stop a running job (default: the newest running one)."""
    parser = ArgParser(prog="medic stop", description="Stop a running training job: "
                                     "it saves a checkpoint and its run is marked stopped.")
    parser.add_argument("run_id", nargs="?", help="the run to stop (default: the newest running run)")
    parser.add_argument("--root", "--output_dir", "--output-dir", default=None,
                        help="project root (default: the working directory)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a clean stop before killing (default: 60)")
    args = parser.parse_args(argv)
    project = Project.at(args.root)
    if args.run_id and args.run_id.startswith("sweep_"):
        return stop_sweep(args.run_id, project.root, args.timeout)
    if args.run_id:
        job = attach(args.run_id, project.root)
    else:
        running = [attach(r, project.root) for r in reversed(project.run_ids())
                   if run_status(project, r) in ACTIVE]
        running = [j for j in running if j.running]
        if not running:
            raise RunNotFoundError(f"no running job in {project.root}")
        job = running[0]
    if not job.running:
        print(f"run {job.run_id} is not running (status: {job.status})")
        return 0
    where = f"pid {job.pid}" if job.pid is not None else f"on {(job.sidecar or {}).get('host') or 'another host'}"
    print(f"stopping run {job.run_id} ({where}) ...", flush=True)
    rc = job.stop(timeout=args.timeout)
    if rc is None:
        print(f"run {job.run_id} has not stopped within {args.timeout:g} s (status: {job.status}); "
              "its stop request stays: it stops at its next progress interval")
        return 1
    print(f"run {job.run_id} ended (status: {job.status}" + (f", exit code {rc})" if job.pid else ")"))
    return 0


def stop_sweep(sweep_id: str, root, timeout: float) -> int:
    """``medic stop SWEEP_ID``: stop this machine's drivers of a sweep; each stops its trials
    gracefully (they continue on ``medic sweep --resume``)."""
    from medic.sweeps.handle import attach_sweep
    handle = attach_sweep(sweep_id, root)
    if not handle.running:  # a driver that was killed leaves its trials' jobs running: stop those
        stopped = handle.stop_trials(timeout)
        print(f"sweep {sweep_id} has no running driver (here or as a SLURM job)"
              + (f"; stopped its trials' runs {', '.join(stopped)}; continue it with: medic sweep --resume {sweep_id}"
                 if stopped else ""))
        return 0
    print(f"stopping sweep {sweep_id} ...", flush=True)
    handle.stop(timeout=max(timeout, 30.0) * 3)
    print(f"sweep {sweep_id} stopped; continue it with: medic sweep --resume {sweep_id}")
    return 0
