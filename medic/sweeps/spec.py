"""What a sweep is: its id and folder, the grid or the search space, the fixed training options,
and the checks that turn bad input into one ``MedicError`` line before anything starts.

    --grid lr=0.001,0.003             a grid axis: the values, typed as the training option is
    --space "lr=loguniform(1e-4,1e-2)"  a distribution: uniform, loguniform, int, logint, choice
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from itertools import product
from pathlib import Path
from typing import Any

from medic.errors import MedicError, RunNotFoundError
from medic.store import columns as C
from medic.store.files import write_json_atomic

DRIVER_JOB_ENV = "MEDIC_SWEEP_DRIVER_JOB"  # set in a driver's own SLURM job: a SIGTERM ends it, not its trials
SWEEP_ID_RE = re.compile(r"^sweep_\d{8}_\d{6}(?:_\d+)?$")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "logint", "choice")
PRUNERS = ("none", "median", "percentile", "hyperband", "successivehalving")
SAMPLERS = ("tpe", "random")
_DIST_RE = re.compile(r"^\s*(?P<kind>[a-z]+)\s*\((?P<args>.*)\)\s*$")


def sweeps_dir(root: str | os.PathLike) -> Path:
    return Path(root) / "analysis" / "sweeps"


def sweep_dir(root: str | os.PathLike, sweep_id: str) -> Path:
    return sweeps_dir(root) / sweep_id


# file systems shared by the nodes of a cluster, where SQLite's locking cannot be trusted
SHARED_FILESYSTEMS = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "fuse.ceph",
                      "glusterfs", "fuse.glusterfs", "panfs", "wekafs", "fuse.sshfs")


def default_storage(root: str | os.PathLike, sweep_id: str, shared: bool | None = None) -> str:
    """The study's storage in the sweep folder: the one a sweep already has (``study.db``, or
    ``study.journal``), else for a new sweep Optuna's journal file when the folder is shared by
    several machines (``shared``, or a network file system), SQLite when it is on a local disk."""
    folder = sweep_dir(root, sweep_id).resolve()
    if (folder / "study.db").exists():
        return f"sqlite:///{folder / 'study.db'}"
    if (folder / "study.journal").exists():
        return f"journal://{folder / 'study.journal'}"
    if shared is None:
        shared = filesystem_type(folder) in SHARED_FILESYSTEMS
    return f"journal://{folder / 'study.journal'}" if shared else f"sqlite:///{folder / 'study.db'}"


def filesystem_type(path: Path) -> str:
    """The type of the file system ``path`` is on (``/proc/mounts``; '' where unknown)."""
    best, kind = "", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = str(path)
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            point = parts[1].replace("\\040", " ")
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, parts[2]
    return kind


def reserve_sweep_id(root: str | os.PathLike) -> str:
    """A fresh ``sweep_<YYYYmmdd_HHMMSS>`` claimed by creating its folder exclusively."""
    sweeps_dir(root).mkdir(parents=True, exist_ok=True)
    stamp, n = time.strftime("%Y%m%d_%H%M%S"), 1
    while True:
        sweep_id = f"sweep_{stamp}" + (f"_{n}" if n > 1 else "")
        try:
            sweep_dir(root, sweep_id).mkdir()
            return sweep_id
        except FileExistsError:
            n += 1


def _option_types() -> dict[str, type]:
    from medic.config import TrainConfig, _type_of
    return {f.name: _type_of(f) for f in fields(TrainConfig)}


def check_key(key: str, types: dict[str, type]) -> None:
    if key in types and key not in ("resume", "output_dir"):
        return
    hint = difflib.get_close_matches(key, list(types), n=1)
    valid = ", ".join(k for k in types if k not in ("resume", "output_dir"))
    raise MedicError(f"{key!r} is not a training option" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                     + f"; valid names: {valid}")


def typed(key: str, text: Any, kind: type) -> Any:
    """One value for option ``key`` from text (or a Python value), as the option's type."""
    if not isinstance(text, str):
        if kind is float and isinstance(text, int) and not isinstance(text, bool):
            return float(text)
        if isinstance(text, kind) and not (kind is int and isinstance(text, bool)):
            return text
        raise MedicError(f"{key} values must be {kind.__name__}, got {text!r}")
    text = text.strip()
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        return kind(text) if kind is not str else text.strip("'\"")
    except ValueError:
        raise MedicError(f"{key} values must be {kind.__name__}, got {text!r}") from None


def split_assignment(text: str, what: str) -> tuple[str, str]:
    if "=" not in text:
        raise MedicError(f"{what} {text!r} must look like NAME=VALUES")
    key, _, value = text.partition("=")
    return key.strip(), value.strip()


def parse_grid(items: list[str] | dict[str, Any]) -> dict[str, list[Any]]:
    """``["lr=0.001,0.003"]`` or ``{"lr": [0.001, 0.003]}`` -> ``{"lr": [0.001, 0.003]}``, typed."""
    types = _option_types()
    pairs = items.items() if isinstance(items, dict) else [split_assignment(i, "--grid") for i in items]
    grid: dict[str, list[Any]] = {}
    for key, values in pairs:
        check_key(key, types)
        if isinstance(values, str):
            values = [v for v in values.split(",") if v.strip()]
        elif not isinstance(values, (list, tuple)):
            values = [values]
        if not values:
            raise MedicError(f"grid {key} has no values: a grid of 0 points")
        grid[key] = list(dict.fromkeys(typed(key, v, types[key]) for v in values))
    return grid


def parse_distribution(key: str, text: str, kind: type) -> dict[str, Any]:
    """``loguniform(1e-4,1e-2)`` -> ``{"kind": "loguniform", "args": [0.0001, 0.01]}``, checked."""
    found = _DIST_RE.match(str(text))
    example = "uniform(a,b), loguniform(a,b), int(a,b), logint(a,b) or choice(v1,v2,...)"
    if not found or found.group("kind") not in DISTRIBUTIONS:
        raise MedicError(f"space {key}={text!r} is not a distribution; use {example}")
    name, args = found.group("kind"), [a for a in found.group("args").split(",") if a.strip()]
    if name == "choice":
        if not args:
            raise MedicError(f"space {key}={text!r}: choice() needs at least one value")
        return {"kind": name, "args": list(dict.fromkeys(typed(key, a, kind) for a in args))}
    number = int if name in ("int", "logint") else float
    if kind is not number and not (kind is float and number is int):
        raise MedicError(f"space {key}={text!r}: option {key} is {kind.__name__}, "
                         f"use {'choice' if kind in (str, bool) else 'int/logint' if kind is int else 'uniform/loguniform'}")
    try:
        low, high = (number(a) for a in args)
    except ValueError:
        raise MedicError(f"space {key}={text!r}: {name} takes two {number.__name__} bounds, e.g. "
                         f"{name}({'1,8' if number is int else '1e-4,1e-2'})") from None
    if not low < high or (name.startswith("log") and low <= 0):
        raise MedicError(f"space {key}={text!r}: need low < high" + (" and low > 0" if name.startswith("log") else ""))
    return {"kind": name, "args": [low, high]}


def parse_space(items: list[str] | dict[str, str]) -> dict[str, dict[str, Any]]:
    types = _option_types()
    pairs = items.items() if isinstance(items, dict) else [split_assignment(i, "--space") for i in items]
    space = {}
    for key, text in pairs:
        check_key(key, types)
        space[key] = parse_distribution(key, text, types[key])
    return space


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(grid, values)) for values in product(*grid.values())]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_ids() -> list[str]:
    """The GPUs this process may use (``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``), without torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


@dataclass
class SweepSpec:
    """Everything that defines a sweep; stored in the study and in ``sweep.json``."""
    sweep_id: str
    grid: dict[str, list[Any]] = field(default_factory=dict)
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    trials: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)
    prune: str = "none"
    prune_startup: int = 2
    sampler: str = "tpe"
    seed: int = 0
    notebook: str = ""
    storage: str = ""
    slurm: dict[str, Any] = field(default_factory=dict)  # the trials' SLURM request; empty: local slots
    monitor: str = C.AVG_LOSS
    direction: str = "minimize"

    @property
    def keys(self) -> list[str]:
        return list(self.grid or self.space)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def trial_config(self, values: dict[str, Any]) -> dict[str, Any]:
        """The trial's full set of training options: defaults, then fixed, then the trial's values."""
        from medic.config import TrainConfig
        config = TrainConfig.from_dict({**self.fixed, **values}).to_dict()
        config.update(resume="", output_dir="")
        return config


def check_spec(spec: SweepSpec) -> SweepSpec:
    """Every check that needs no process: keys, values, trial counts, pruner, notebook."""
    from medic.config import TrainConfig
    if bool(spec.grid) == bool(spec.space):
        raise MedicError("give a grid (--grid NAME=V1,V2) or a search space (--space NAME=DIST), one of them")
    overlap = set(spec.keys) & set(spec.fixed)
    if overlap:
        raise MedicError(f"{', '.join(sorted(overlap))} is both swept and fixed; give it once")
    if spec.grid:
        points = grid_points(spec.grid)
        if not points:
            raise MedicError("the grid has 0 points")
        if spec.trials and spec.trials != len(points):
            raise MedicError(f"--trials {spec.trials} with a grid of {len(points)} points: leave --trials out")
        spec.trials = len(points)
        for point in points:
            spec.trial_config(point)  # a bad combination fails now, naming the option
    else:
        if spec.trials < 1:
            raise MedicError(f"--trials must be >= 1 with --space, got {spec.trials}")
        spec.trial_config({k: d["args"][0] for k, d in spec.space.items()})
    if spec.prune not in PRUNERS:
        raise MedicError(f"--prune must be one of {', '.join(PRUNERS)}, got {spec.prune!r}")
    if spec.prune_startup < 0:
        raise MedicError(f"--prune_startup must be >= 0, got {spec.prune_startup}")
    if spec.sampler not in SAMPLERS:
        raise MedicError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {spec.sampler!r}")
    if not Path(spec.notebook).is_file():
        raise MedicError(f"the trial notebook {spec.notebook} does not exist (--notebook PATH)")
    config = TrainConfig.from_dict(spec.fixed)
    spec.monitor = config.monitor
    spec.direction = "maximize" if config.monitor_direction == "max" else "minimize"
    return spec


def check_slots(spec: SweepSpec, slots: int) -> list[dict[str, str]]:
    """The environment of each slot: its own GPUs on CUDA, its share of the cores on CPU. Slots
    the devices cannot hold are an error."""
    if slots < 1:
        raise MedicError(f"--slots must be >= 1, got {slots}")
    if spec.slurm:  # each trial is a job; what the partition can hold is SLURM's to say (run.check_cluster)
        return [{} for _ in range(slots)]
    nproc = int(spec.fixed.get("nproc_per_node", 1))
    device = spec.fixed.get("device", "auto")
    gpus = gpu_ids() if device != "cpu" else []
    if device == "cuda" and not gpus:
        raise MedicError("device cuda was asked for but no GPU is visible")
    if gpus:
        if slots * nproc > len(gpus):
            raise MedicError(f"--slots {slots} x nproc_per_node {nproc} needs {slots * nproc} GPUs; "
                             f"{len(gpus)} visible")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[s * nproc:(s + 1) * nproc])} for s in range(slots)]
    cores = cpu_count()
    if slots * nproc > cores:
        raise MedicError(f"--slots {slots} x nproc_per_node {nproc} needs {slots * nproc} cores; "
                         f"{cores} available")
    threads = str(int(spec.fixed.get("threads") or max(1, cores // (slots * nproc))))
    return [{"OMP_NUM_THREADS": threads, "MEDIC_SWEEP_THREADS": threads} for _ in range(slots)]


def save_spec(root: str | os.PathLike, spec: SweepSpec) -> Path:
    path = sweep_dir(root, spec.sweep_id) / "sweep.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, spec.to_dict())
    return path


def load_spec(root: str | os.PathLike, sweep_id: str, storage: str = "") -> SweepSpec:
    """The stored spec of ``sweep_id``: from ``sweep.json`` here, else from the study in ``storage``."""
    path = sweep_dir(root, sweep_id) / "sweep.json"
    if path.is_file():
        try:
            return SweepSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as err:
            raise MedicError(f"cannot read {path}: {err}") from None
    if storage:
        from medic.sweeps.study import stored_spec
        data = stored_spec(storage, sweep_id)
        if data is not None:
            return SweepSpec.from_dict(data)
    known = sorted(p.name for p in sweeps_dir(root).glob("sweep_*")) if sweeps_dir(root).is_dir() else []
    raise RunNotFoundError(f"no sweep {sweep_id!r} in {sweeps_dir(root)}"
                           + (f" (known: {', '.join(known[-5:])})" if known else ""))
