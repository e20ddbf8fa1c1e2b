"""Before any worker starts: check the input, and settle what a resumed run continues.

Everything here runs without torch (the checkpoint module is imported only when resuming), in
the process that the user started: a mistake is one line, seconds sooner, and leaves nothing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from medic.config import TrainConfig
from medic.errors import MedicError, Problems, RunNotFoundError
from medic.store.files import shown_path
from medic.store.paths import RUN_ID_RE, Project, resume_points, resumed_run_id
from medic.store.sidecar import read_sidecar
from medic.store.status import is_local, run_status
from medic.train.data.folders import check_folder
from medic.train.data.layouts import is_layout, plan_volumes
from medic.train.plugins import check_plugin
from medic.train.selection import check_monitor, validation_columns
from medic.train.data.splits import check_folds

# options that describe the model and so must match the checkpoint being resumed
MODEL_OPTIONS = ("model", "num_classes")
# options a resumed run takes from the command line, never from the checkpoint
RUNTIME_OPTIONS = ("resume", "output_dir", "nproc_per_node", "threads", "device", "num_workers", "lang")


def check_before_start(cfg: TrainConfig, project: Project, explicit: set[str] | None = None) -> None:
    """What can be known before any worker starts: the data, the plug-ins and whether the output
    folder can be written. Creates nothing: bad input leaves no trace, not even an empty folder.
    Every problem is collected, then all are reported together (``check_data``). A
    Decathlon/nnU-Net data set settles num_classes, spatial_dims and patch_size in ``cfg``."""
    problems = Problems()
    check_data(cfg, explicit, problems)
    if not problems:  # folds are checked against the data's case names, so against sound data only
        _collect(problems, check_folds, cfg)  # a fold out of range, a splits_final.json naming unknown cases
    for name in ("model", "dataset"):
        if getattr(cfg, name):
            _collect(problems, check_plugin, getattr(cfg, name), name)
    if cfg.val_metrics != "dice" and importlib.util.find_spec("scipy") is None:
        problems.add(f"--val_metrics {cfg.val_metrics} needs scipy (MONAI's distance transforms): pip install scipy")
    if not cfg.dataset:  # the class names are known now (a plug-in's, once it has loaded)
        _collect(problems, check_monitor, cfg.monitor,
                 validation_columns([f"class_{i}" for i in range(1, cfg.num_classes)], cfg.val_metrics))
    _collect(problems, check_writable, project.root)
    problems.check("the input, found before the training started"
                   + (f" (data folder {shown_path(cfg.data)})" if cfg.data else ""))


def check_data(cfg: TrainConfig, explicit: set[str] | None, problems: Problems):
    """The data alone (``medic check``): an images/ + masks/ folder's rows, or the Decathlon/nnU-Net
    layout; every problem added to ``problems``. A folder that is not a data set at all (no
    images/, no dataset.json) is one error, raised at once."""
    if cfg.data and not is_layout(cfg.data):
        return check_folder(cfg.data, problems)
    return plan_volumes(cfg, explicit, problems)


def _collect(problems: Problems, check, *args) -> None:
    try:
        check(*args)
    except MedicError as err:
        problems.add(err)


def check_writable(root: Path) -> None:
    """Whether ``root`` can be made and written, tried on its nearest existing folder with a
    probe file (as root, permission bits say nothing: only a real write tells)."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MedicError(f"output folder {root} is not writable: {existing} is not a folder")
    probe = existing / f".medic-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise MedicError(f"output folder {root} is not writable ({err.strerror})") from err


def resolve_resume(project: Project, spec: str) -> Path:
    """``latest`` | a run id | a checkpoint path → the checkpoint file to resume from."""
    path = Path(spec)
    if spec.endswith(".pth") or path.is_file():
        if not path.is_file():
            raise RunNotFoundError(f"--resume: checkpoint {spec} does not exist")
        return path.resolve()
    if spec == "latest":
        spec = resumed_run_id(project, spec)
    if not RUN_ID_RE.fullmatch(spec):
        raise MedicError(f"--resume {spec!r} is neither 'latest', a run id (YYYYmmdd_HHMMSS) nor a .pth file")
    folder = project.checkpoint_dir(spec)
    if not resume_points(folder):
        known = spec in project.run_ids()
        raise RunNotFoundError(f"--resume: run {spec} " + ("has no checkpoints yet" if known else "does not exist")
                               + f" (looked in {folder})")
    from medic.train.outputs import checkpoint as ckpt  # torch: only to read a checkpoint
    path, _ = ckpt.newest_intact(folder, warn=lambda m: print(m, file=sys.stderr))
    return path


def plan_resume(cfg: TrainConfig, explicit: set[str], project: Project) -> tuple[TrainConfig, str, Path]:
    """The config, run id and checkpoint of a resumed run: the checkpoint's options, overridden by
    what the user typed now."""
    from medic.train.outputs import checkpoint as ckpt  # torch: only when resuming
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
    # alive here by its pid, or elsewhere by its heartbeat; one checkpointed for a requeue is not
    status = run_status(project, run_id, side or None)
    if status in ("starting", "running") and not side.get("requeued"):
        where = f"pid {side.get('pid')}" if is_local(side) else f"on {side.get('host')}"
        raise MedicError(f"run {run_id} is still {status} ({where}); stop it first: medic stop {run_id}")
    done = state["epoch"]
    if done >= new.epochs and not state.get("partial"):
        raise MedicError(f"run {run_id} already finished all {new.epochs} epochs; "
                         f"pass --epochs N (N > {done}) to train it further")
    return new, run_id, path
