"""``medic train`` = ``python -m medic.train``; also ``torchrun --nproc_per_node N -m medic.train``.

Two roles:
- **launcher** (``--nproc_per_node N`` > 1, or torchrun rendezvous flags, outside torchrun):
  ``medic.train.launch.torchrun.launch`` checks the input, reserves the run id and starts torchrun.
- **worker** (a plain single process, or a rank under torchrun): rank 0 settles the run id and
  the resume point and shares them; every rank then runs ``medic.train.loop.run``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import NoReturn

from medic.config import TrainConfig, build_parser
from medic.errors import MedicError
from medic.slurm.options import SlurmOptions, parse_train_args
from medic.store.control import Heartbeat
from medic.store.paths import Project, reserve_run_id
from medic.store.stages import hold_at
from medic.train.launch.checks import check_before_start, plan_resume
from medic.train.launch.torchrun import EXIT_FILE_ENV, launch
from medic.train.plugins import import_plugins

HANDLED_CODES = (2, 3, 130)  # a user error, a non-finite loss, a graceful stop


def explicit_options(argv: list[str]) -> set[str]:
    """Names of the options the user actually typed (so a resume keeps the others)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    ns, _ = parser.parse_known_args(argv)
    return set(vars(ns))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--fold=all" in argv or any(a == "--fold" and b == "all" for a, b in zip(argv, argv[1:])):
        raise MedicError("--fold all runs every fold as a sweep: start it with 'medic train', not python -m medic.train")
    cfg, slurm, torchrun_flags = parse_train_args(argv)
    if slurm.launcher == "slurm":
        return submit_to_slurm(cfg, slurm, explicit_options(argv), torchrun_flags)
    if under_torchrun():
        if torchrun_flags:
            raise MedicError(f"{torchrun_flags[0]} is a torchrun flag: put it before -m medic.train")
        # `medic train` has checked everything before starting torchrun; a user's own torchrun has not
        return worker_main(cfg, explicit_options(argv), checked=EXIT_FILE_ENV in os.environ)
    if cfg.nproc_per_node > 1 or torchrun_flags:
        return launch(cfg, explicit_options(argv), torchrun_flags)
    # one plain process: the launcher's checks, done before torch is imported (seconds sooner)
    explicit = explicit_options(argv)
    project = Project.at(cfg.output_dir or None)
    check_before_start(cfg, project, explicit)
    if cfg.resume:  # settled here too, as the launcher of several processes does: before MONAI
        # loads and the process group starts, so a refused resume is reported at once
        new, resumed_id, path = plan_resume(cfg, explicit, project)
        import_plugins(new)  # this process trains with them: a broken one is reported at once
        return worker_main(new, explicit, plan=(new.to_dict(), resumed_id, str(path)))
    # the user's modules, which this process imports anyway: one that fails is reported before
    # the claim, so it leaves nothing (a plug-in that imports torch delays the claim that much)
    import_plugins(cfg)
    # claimed now, before MONAI loads: the run is listed from its first seconds
    run_id = os.environ.get("MEDIC_RUN_ID") or reserve_run_id(project)
    Heartbeat.of(project, run_id).start()
    return worker_main(cfg, explicit, run_id=run_id)


def submit_to_slurm(cfg: TrainConfig, slurm: SlurmOptions, explicit: set[str], torchrun_flags: list[str]) -> int:
    """``--launcher slurm``: the same checks as a local start, then a batch job (``medic.slurm``)."""
    if torchrun_flags:
        raise MedicError(f"{torchrun_flags[0]}: with --launcher slurm, medic sets torchrun's rendezvous itself "
                         "(use --nodes and --nproc_per_node)")
    if under_torchrun():
        raise MedicError("--launcher slurm submits a job: run it on a login node, not under torchrun")
    from medic.slurm.submit import submit  # sbatch and the batch script: only when submitting
    check_before_start(cfg, Project.at(cfg.output_dir or None), explicit)
    return submit(cfg, slurm, explicit)


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


def worker_main(cfg: TrainConfig, explicit: set[str], checked: bool = True,
                run_id: str | None = None, plan: tuple[dict, str, str] | None = None) -> int:
    """One rank's training. ``run_id``: claimed by the launching process; ``plan``: the
    (config, run id, checkpoint) of a resume that this process has already settled."""
    # torch and MONAI load here, after the checks (a mistake is reported seconds sooner)
    from torch.distributed.elastic.multiprocessing.errors import record

    from medic.train.loop import run
    hold_at("torch")

    def decide():  # runs on rank 0 only
        if plan:
            return plan
        project = Project.at(cfg.output_dir or None)
        if not checked:
            check_before_start(cfg, project, explicit)
        if cfg.resume:
            new, resumed_id, path = plan_resume(cfg, explicit, project)
            return new.to_dict(), resumed_id, str(path)
        if run_id or os.environ.get("MEDIC_RUN_ID"):  # claimed by the launching process
            return cfg.to_dict(), run_id or os.environ["MEDIC_RUN_ID"], None
        new_id = reserve_run_id(project)  # a user's own torchrun: claimed here, alive from now on
        Heartbeat.of(project, new_id).start()
        return cfg.to_dict(), new_id, None

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

