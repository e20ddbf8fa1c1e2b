"""``medic stop [RUN_ID]``: stop a running training job (default: the newest running one); it
saves a checkpoint and its run is marked stopped (``medic.jobs.Job.stop``)."""

from __future__ import annotations


from medic.cli import ArgParser
from medic.errors import RunNotFoundError
from medic.jobs import attach
from medic.store.paths import Project
from medic.store.sidecar import read_sidecar


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
    if args.run_id:
        job = attach(args.run_id, project.root)
    else:
        running = [attach(r, project.root) for r in reversed(project.run_ids())
                   if (read_sidecar(project.sidecar(r)) or {}).get("status") == "running"]
        running = [j for j in running if j.running]
        if not running:
            raise RunNotFoundError(f"no running job in {project.root}")
        job = running[0]
    if not job.running:
        print(f"run {job.run_id} is not running (status: {job.status or 'unknown'})")
        return 0
    print(f"stopping run {job.run_id} (pid {job.pid}) ...", flush=True)
    rc = job.stop(timeout=args.timeout)
    print(f"run {job.run_id} ended (status: {job.status or 'unknown'}, exit code {rc})")
    return 0
