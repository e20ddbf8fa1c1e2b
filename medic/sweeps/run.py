"""Start or resume a sweep driver in this process (``medic sweep``): check everything first, so
that bad input starts nothing and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from medic.errors import MedicError
from medic.sweeps.spec import (SweepSpec, check_slots, check_spec, default_storage, grid_points,
                               load_spec, parse_grid, parse_space, reserve_sweep_id, save_spec, sweep_dir)


def default_notebook(root: Path) -> Path:
    """The project's ``notebooks/01_train.ipynb``, else the one of the medic checkout."""
    here = root / "notebooks" / "01_train.ipynb"
    if here.is_file():
        return here
    return Path(__file__).resolve().parent.parent.parent / "notebooks" / "01_train.ipynb"


def new_spec(root: Path, *, grid=None, space=None, trials: int = 0, fixed: dict[str, Any] | None = None,
             prune: str = "none", prune_startup: int = 2, sampler: str = "tpe", seed: int = 0,
             notebook: str = "", storage: str = "", slurm: dict[str, Any] | None = None) -> SweepSpec:
    """A checked spec (its id not yet reserved); ``slurm``: the trials' SLURM request (each trial
    a job), else the trials run in this machine's slots."""
    fixed = dict(fixed or {})
    for key in ("resume", "output_dir"):
        if fixed.get(key):
            raise MedicError(f"{key} cannot be fixed for a sweep (each trial is its own run in the project root)")
        fixed.pop(key, None)
    if fixed:
        from medic.sweeps.spec import _option_types, check_key, typed
        types = _option_types()
        for key in list(fixed):
            check_key(key, types)
            fixed[key] = typed(key, fixed[key], types[key])
    spec = SweepSpec(sweep_id="", grid=parse_grid(grid or {}), space=parse_space(space or {}),
                     trials=int(trials or 0), fixed=fixed, prune=prune or "none",
                     prune_startup=int(prune_startup), sampler=sampler, seed=int(seed),
                     notebook=str(Path(notebook).resolve() if notebook else default_notebook(root)),
                     storage=storage, slurm=slurm_request(slurm))
    return check_spec(spec)


def slurm_request(values: dict[str, Any] | None) -> dict[str, Any]:
    """``medic train``'s SLURM options (``--launcher slurm`` ...) as a sweep keeps them: checked,
    without the launcher; empty when the trials run here."""
    from medic.slurm.options import SlurmOptions
    options = SlurmOptions.from_dict(dict(values or {}))
    if options.launcher != "slurm":
        return {}
    return {k: v for k, v in options.to_dict().items() if k not in ("launcher", "dry_run")}


def slurm_options(spec: SweepSpec):
    """The trials' ``SlurmOptions``, or None for local slots."""
    from medic.slurm.options import SlurmOptions
    return SlurmOptions(launcher="slurm", **spec.slurm) if spec.slurm else None


def create(root: Path, spec: SweepSpec, slots: int, storage: str = "") -> str:
    """Reserve the sweep's id and folder, store its spec and make its study (the grid queued);
    returns the storage URL. Nothing is left behind when this fails."""
    from medic.sweeps.study import create_study, open_storage
    check_slots(spec, slots)
    if spec.slurm:  # SLURM takes the trials' jobs, and can run --slots of them: asked before anything is made
        from medic.sweeps.slurm_trial import check_cluster
        check_cluster(slurm_options(spec), slots, root)
    if storage:  # the database must answer before a sweep is made
        open_storage(storage)
    spec.sweep_id = reserve_sweep_id(root)
    # on a cluster the sweep folder is shared by the nodes: the journal file, not SQLite
    url = storage or default_storage(root, spec.sweep_id, shared=True if spec.slurm else None)
    try:
        save_spec(root, spec)
        create_study(spec, url, grid_points(spec.grid))
    except BaseException:
        shutil.rmtree(sweep_dir(root, spec.sweep_id), ignore_errors=True)
        raise
    return url


def start(root: str | os.PathLike, spec: SweepSpec | None, slots: int, *, resume: str = "",
          storage: str = "", say: Callable[[str], None] = print, slurm: dict[str, Any] | None = None) -> int:
    """Run a driver for a new sweep (``spec``) or an existing one (``resume``; ``slurm``: SLURM
    options that change its stored request) until it ends."""
    from medic.sweeps.driver import Driver
    root = Path(root).resolve()
    if resume:
        spec = load_spec(root, resume, storage)
        if slurm is not None:  # the SLURM options typed now change the stored request
            spec.slurm = slurm_request({**spec.slurm, "launcher": "slurm" if spec.slurm else "local", **slurm})
        slot_envs = check_slots(spec, slots)
        if spec.slurm:
            from medic.sweeps.slurm_trial import check_cluster
            check_cluster(slurm_options(spec), slots, root)
        url = storage or spec.storage or default_storage(root, resume)
        save_spec(root, spec)
    else:
        assert spec is not None
        url = create(root, spec, slots, storage)
        slot_envs = check_slots(spec, slots)
        say(f"sweep {spec.sweep_id}: {spec.trials} trial(s), {slots} "
            + ("SLURM job(s) at once" if spec.slurm else "slot(s)") + ", "
            f"{spec.monitor} ({spec.direction}), storage {url}")
    driver = Driver(spec, root, slot_envs, url, say=say, slurm=slurm_options(spec))
    driver.install_signal_handlers()
    rc = driver.run()
    if rc == 0:
        say(f"sweep {spec.sweep_id}: done; summary in {sweep_dir(root, spec.sweep_id) / 'summary.csv'}")
    return rc
