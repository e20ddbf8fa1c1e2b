"""``medic train`` = ``python -m medic.train``; also ``torchrun --nproc_per_node N -m medic.train``.

Two roles:
- **launcher** (``--nproc_per_node N`` > 1, or torchrun rendezvous flags, outside torchrun): check
  everything that can be checked before a worker starts (options, data folder, plug-ins, output
  folder, resume target), reserve the run id, then start torchrun — bound to 127.0.0.1 for a
  one-machine run, OMP threads = cores / N — and wait for it, passing Ctrl-C/SIGTERM on.
- **worker** (a plain single process, or a rank under torchrun): rank 0 settles the run id and
  the resume point and shares them; every rank then runs ``medic.trainer.run``.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

from medic.config import TrainConfig, parse_args
from medic.errors import MedicError, RunNotFoundError
from medic.paths import RUN_ID_RE, Project, reserve_run_id
from medic.sidecar import now_str, read_sidecar, update_sidecar

# options that describe the model and so must match the checkpoint being resumed
MODEL_OPTIONS = ("model", "num_classes")
EXIT_FILE_ENV = "MEDIC_EXIT_FILE"
FAILURE_DIR_ENV = "MEDIC_FAILURE_DIR"  # where each failing rank leaves its error (trainer.report_failure)
HANDLED_CODES = (2, 3, 130)  # a user error, a non-finite loss, a graceful stop
# options a resumed run takes from the command line, never from the checkpoint
RUNTIME_OPTIONS = ("resume", "output_dir", "nproc_per_node", "threads", "device", "num_workers", "lang")


def explicit_options(argv: list[str]) -> set[str]:
    """Names of the options the user actually typed (so a resume keeps the others)."""
    from medic.config import build_parser
    import argparse
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    ns, _ = parser.parse_known_args(argv)
    return set(vars(ns))


def pid_alive(pid, written_at: float | None = None) -> bool:
    # a zombie counts as gone: a killed run's workers may never be reaped (in a container whose
    # first process reaps nothing), and their run must still be resumable
    from medic.status import pid_alive as alive
    return alive(pid, written_at)


def resolve_resume(project: Project, spec: str) -> Path:
    """``latest`` | a run id | a checkpoint path → the checkpoint file to resume from."""
    from medic import checkpoint as ckpt
    path = Path(spec)
    if spec.endswith(".pth") or path.is_file():
        if not path.is_file():
            raise RunNotFoundError(f"--resume: checkpoint {spec} does not exist")
        return path.resolve()
    if spec == "latest":
        ids = [i for i in reversed(project.run_ids()) if ckpt.candidates(project.checkpoint_dir(i))]
        if not ids:
            raise RunNotFoundError(f"--resume latest: no run with checkpoints in {project.checkpoints}")
        spec = ids[0]
    if not RUN_ID_RE.fullmatch(spec):
        raise MedicError(f"--resume {spec!r} is neither 'latest', a run id (YYYYmmdd_HHMMSS) nor a .pth file")
    folder = project.checkpoint_dir(spec)
    if not ckpt.candidates(folder):
        known = spec in project.run_ids()
        raise RunNotFoundError(f"--resume: run {spec} " + ("has no checkpoints yet" if known else "does not exist")
                               + f" (looked in {folder})")
    path, _ = ckpt.newest_intact(folder, warn=lambda m: print(m, file=sys.stderr))
    return path


def plan_resume(cfg: TrainConfig, explicit: set[str], project: Project) -> tuple[TrainConfig, str, Path]:
    """The config, run id and checkpoint of a resumed run: the checkpoint's options, overridden by
    what the user typed now."""
    from medic import checkpoint as ckpt
    path = resolve_resume(project, cfg.resume)
    state = ckpt.load(path)
    stored = dict(state.get("config", {}))
    for name in MODEL_OPTIONS:
        if name in explicit and name in stored and stored[name] != getattr(cfg, name):
            raise MedicError(f"checkpoint {path} was trained with {name}={stored[name]!r}; "
                             f"cannot resume it with {name}={getattr(cfg, name)!r}")
    merged = {**stored, **{k: getattr(cfg, k) for k in explicit | set(RUNTIME_OPTIONS)}}
    new = TrainConfig.from_dict(merged, strict=False)
    new.resume = str(path)
    run_id = state["run_id"]
    side = read_sidecar(project.sidecar(run_id)) or {}
    try:
        written = project.sidecar(run_id).stat().st_mtime
    except OSError:
        written = None
    if side.get("status") == "running" and pid_alive(side.get("pid"), written) \
            and side.get("host") in (None, os.uname().nodename):
        raise MedicError(f"run {run_id} is still running (pid {side.get('pid')}); stop it first: medic stop {run_id}")
    done = state["epoch"]
    if done >= new.epochs and not state.get("partial"):
        raise MedicError(f"run {run_id} already finished all {new.epochs} epochs; "
                         f"pass --epochs N (N > {done}) to train it further")
    return new, run_id, path


def check_before_start(cfg: TrainConfig, project: Project) -> None:
    """What can be known before any worker starts: folders, files and plug-ins."""
    try:
        project.make_dirs()
        probe = project.metrics / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise MedicError(f"output folder {project.root} is not writable ({err.strerror})") from err
    if cfg.data:
        from medic.folders import check_folder
        check_folder(cfg.data)
    from medic.plugins import check_plugin
    for name in ("model", "dataset"):
        if getattr(cfg, name):
            check_plugin(getattr(cfg, name), name)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, torchrun_flags = parse_args(argv)
    if under_torchrun():
        if torchrun_flags:
            raise MedicError(f"{torchrun_flags[0]} is a torchrun flag: put it before -m medic.train")
        # `medic train` has checked everything before starting torchrun; a user's own torchrun has not
        return worker_main(cfg, explicit_options(argv), checked=EXIT_FILE_ENV in os.environ)
    if cfg.nproc_per_node > 1 or torchrun_flags:
        return launch(cfg, explicit_options(argv), torchrun_flags)
    # one plain process: the launcher's checks, done before torch is imported (seconds sooner)
    check_before_start(cfg, Project.at(cfg.output_dir or None))
    return worker_main(cfg, explicit_options(argv))


def launch(cfg: TrainConfig, explicit: set[str], torchrun_flags: list[str]) -> int:
    """Start torchrun with N workers of this config, and wait."""
    project = Project.at(cfg.output_dir or None)
    cfg.output_dir = str(project.root)
    standalone = not torchrun_flags
    check_before_start(cfg, project)
    env = dict(os.environ)
    run_id = None
    if cfg.resume:
        cfg, run_id, path = plan_resume(cfg, explicit, project)
        cfg.output_dir = str(project.root)
    elif standalone:
        run_id = os.environ.get("MEDIC_RUN_ID") or reserve_run_id(project)
    if run_id and standalone:
        env["MEDIC_RUN_ID"] = run_id  # every rank uses it; in multi-node runs global rank 0 picks
    cores = os.cpu_count() or 1
    threads = cfg.threads or max(1, cores // cfg.nproc_per_node)
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg.nproc_per_node}"]
    if standalone:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        cmd += ["--nnodes=1", "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:0",
                "--local_addr=127.0.0.1"]
    else:
        cmd += torchrun_flags
    worker_cfg = TrainConfig(**{**cfg.to_dict(), "nproc_per_node": 1, "threads": threads})
    cmd += ["-m", "medic.train", *worker_cfg.to_args(full=True)]
    exit_file = project.log / f".exit-{os.getpid()}"
    exit_file.unlink(missing_ok=True)
    env[EXIT_FILE_ENV] = str(exit_file)
    # torchrun's agent copies the first failing worker's error here (its documented hand-over)
    error_file = project.log / f".error-{os.getpid()}.json"
    error_file.unlink(missing_ok=True)
    env.setdefault("TORCHELASTIC_ERROR_FILE", str(error_file))
    # and each failing rank its own error, timed precisely (medic.trainer.report_failure)
    failure_dir = project.log / f".failures-{os.getpid()}"
    shutil.rmtree(failure_dir, ignore_errors=True)
    env[FAILURE_DIR_ENV] = str(failure_dir)
    job: list[subprocess.Popen] = []
    pending: list[int] = []

    def forward(signum, frame):
        # straight to the training processes: they agree to stop at a step boundary, save and
        # exit cleanly, so the agent ends normally instead of dumping its own interruption.
        # Before the workers exist, the agent gets the signal (and stops the start-up).
        if not job:
            pending.append(signum)
            return
        for pid in child_pids(job[0].pid) or [job[0].pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    old_pid = (read_sidecar(project.sidecar(run_id)) or {}).get("pid", -1) if run_id else -1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)  # before the start: a Ctrl-C then must not orphan the job
    job.append(subprocess.Popen(cmd, env=env, start_new_session=True))
    for signum in pending:
        forward(signum, None)
    code = job[0].wait()
    if exit_file.exists():
        code = int(exit_file.read_text() or code)
        exit_file.unlink()
    cause = first_cause(failure_dir) or first_failure(error_file)
    shutil.rmtree(failure_dir, ignore_errors=True)
    if run_id:
        sidecar = project.sidecar(run_id)
        side = read_sidecar(sidecar)
        if side is not None and side.get("pid") == old_pid:
            pass  # never restarted (a resume refused by the workers): the record stays as it was
        elif side is not None and side.get("status") == "running":
            update_sidecar(sidecar, status="failed", end_time=now_str(),
                           message=cause or f"the training processes ended without finishing (exit code {code})")
        elif side is not None and side.get("status") == "failed" and cause:
            # rank 0 may only have seen its peer vanish; name the error that started it
            update_sidecar(sidecar, message=f"{cause} (the first process to fail; the others stopped with it)")
    return code


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (torchrun's workers), read from /proc; [] where unknown."""
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        return []
    return kids


def first_cause(folder: Path) -> str | None:
    """The error that started a failure, from the ranks' own records: the earliest error that
    is not a rank seeing its peer vanish (or the earliest of all when each is)."""
    records = []
    for path in folder.glob("rank*.json"):
        try:
            data = json.loads(path.read_text())
            records.append((bool(data["consequence"]), float(data["time"]), str(data["message"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return min(records)[2][:300] if records else None


def first_failure(path: Path) -> str | None:
    """The first line of the error torchrun recorded for the first failing worker, if any."""
    try:
        data = json.loads(path.read_text())
        path.unlink()
    except (OSError, ValueError):
        return None
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, dict):
        message = message.get("message")
    lines = str(message or "").strip().splitlines()
    return lines[0][:300] if lines else None


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def end_process(main) -> NoReturn:
    """Run a command's ``main`` as the whole process and exit with its code.

    A rank under torchrun skips the interpreter's finalization: everything the run writes is
    written and closed when ``main`` returns, and what finalization would still do is destroy
    objects that hold the process group's C++ state (DDP's reducer, a collective's work
    handle); gloo's threads then meet a half torn-down interpreter and the process can die of
    SIGABRT ("terminate called without an active exception") after a run that succeeded,
    failing the whole job."""
    from medic.cli import run_main
    if not under_torchrun():
        sys.exit(run_main(main))
    import traceback
    try:
        code = run_main(main)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:  # torchrun's error handler has recorded it; shown here as well
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def worker_main(cfg: TrainConfig, explicit: set[str], checked: bool = True) -> int:
    from torch.distributed.elastic.multiprocessing.errors import record
    from medic.trainer import run

    def decide():  # runs on rank 0 only
        project = Project.at(cfg.output_dir or None)
        if not checked:
            check_before_start(cfg, project)
        if cfg.resume:
            new, run_id, path = plan_resume(cfg, explicit, project)
            return new.to_dict(), run_id, str(path)
        return cfg.to_dict(), os.environ.get("MEDIC_RUN_ID") or reserve_run_id(project), None

    code = record(run)(cfg, decide)
    # everything is written and closed: spare the exit the interpreter's final garbage collection
    # over torch's and MONAI's objects, which takes seconds (and delays a stop that much)
    gc.freeze()
    exit_file = os.environ.get(EXIT_FILE_ENV)
    if exit_file and code in HANDLED_CODES:
        # launched by `medic train`: the reason is already printed and the launcher returns the
        # code, so torchrun's agent need not report an ordinary outcome as a crash
        if os.environ.get("RANK", "0") == "0":
            Path(exit_file).write_text(str(code))
        return 0
    return code


if __name__ == "__main__":
    end_process(main)
