"""``medic train``: the trainer (``medic.train.launch.roles``), and ``medic train --folds K --fold all``:
the K fold runs as a sweep (a ``fold`` grid of ``medic
sweep``, so slots, resume and the sweep's launchers apply), then the cross-validation's summary
in ``analysis/cv/cv_<timestamp>/`` (``medic.analysis.cv``).

    medic train --data Task01 --folds 5 --fold all --epochs 100 [--slots 2] [--cv_epoch last|best]
    medic train --fold all --resume sweep_20251106_103015 [--slots 2]     # after a stop or a crash
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Callable

from medic.errors import MedicError

# options that are the sweep's, not a fold run's
NOT_FIXED = ("fold", "resume", "output_dir", "cv_epoch")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_all_folds(argv):  # every fold, as a sweep, then the cross-validation's summary
        return run_all_folds(argv)
    from medic.train.launch.roles import main as train_main
    return train_main(argv)


def wants_all_folds(argv: list[str]) -> bool:
    return "--fold=all" in argv or any(a == "--fold" and b == "all" for a, b in zip(argv, argv[1:]))


def take_sweep_flags(argv: list[str]) -> tuple[list[str], int]:
    """``argv`` without ``--fold all`` and ``--slots N``, and the slots (default 1)."""
    rest, slots, i = [], 1, 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--fold=all" or (tok == "--fold" and argv[i + 1:i + 2] == ["all"]):
            i += 1 if tok == "--fold=all" else 2
            continue
        if tok.startswith("--slots"):
            value = tok.partition("=")[2] if "=" in tok else (argv[i + 1] if i + 1 < len(argv) else "")
            if not value.isdigit() or int(value) < 1:
                raise MedicError(f"--slots must be a number >= 1, got {value!r}")
            slots = int(value)
            i += 1 if "=" in tok else 2
            continue
        rest.append(tok)
        i += 1
    return rest, slots


def run_all_folds(argv: list[str], say: Callable[[str], None] = print) -> int:
    """Train every fold as a sweep trial, then write the cross-validation's summary."""
    from medic.analysis.cv import write_cv
    from medic.analysis.papers import format_table
    from medic.config import TrainConfig, parse_args
    from medic.store.paths import Project
    from medic.sweeps.results import sweep_summary
    from medic.sweeps.run import new_spec, start
    from medic.train.data.splits import fold_count, splits_path
    from medic.train.launch.checks import check_before_start

    rest, slots = take_sweep_flags(argv)
    cfg, torchrun_flags = parse_args(rest)
    if torchrun_flags:
        raise MedicError(f"{torchrun_flags[0]} is a multi-node flag; --fold all runs its folds as a sweep on this machine")
    root = Path(cfg.output_dir or ".").resolve()
    if cfg.resume and not cfg.resume.startswith("sweep_"):
        raise MedicError("--fold all --resume takes the sweep of the folds (sweep_<timestamp>)")
    if cfg.resume:
        from medic.sweeps.spec import load_spec
        sweep_id = cfg.resume
        k = len(load_spec(root, sweep_id).grid.get("fold") or [])
        if not k:
            raise MedicError(f"{sweep_id} is not a sweep of folds (it has no fold grid)")
        rc = start(root, None, slots, resume=sweep_id, say=say)
    else:
        k = fold_count(cfg)
        check_before_start(TrainConfig.from_dict({**cfg.to_dict(), "fold": 0}), Project.at(root))
        defaults = TrainConfig()
        fixed = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig)
                 if f.name not in NOT_FIXED and getattr(cfg, f.name) != getattr(defaults, f.name)}
        fixed["folds"] = k
        if cfg.splits:  # the trials run elsewhere: the file by its full path
            fixed["splits"] = str(Path(cfg.splits).resolve())
        spec = new_spec(root, grid={"fold": list(range(k))}, fixed=fixed)
        rc = start(root, spec, slots, say=say)
        sweep_id = spec.sweep_id
    if rc != 0:
        return rc
    trials = sweep_summary(sweep_id, root).sort_values("fold")
    unfinished = trials[trials["status"] != "completed"]
    if not unfinished.empty or len(trials) != k:
        row = unfinished.iloc[0] if not unfinished.empty else None
        raise MedicError((f"fold {row['fold']} ended {row['status']}" if row is not None else "not every fold ran")
                         + f": no cross-validation summary; continue with: medic train --fold all --resume {sweep_id}")
    folder = write_cv([str(r) for r in trials["run_id"]], root, cfg.cv_epoch, splits=str(splits_path(cfg) or ""))
    import pandas as pd
    summary = pd.read_csv(folder / "summary.csv")
    caveat = " (chosen on the same cases: optimistic)" if cfg.cv_epoch == "best" else ""
    say(f"cross-validation of {k} folds (sweep {sweep_id}), {cfg.cv_epoch} epoch of each fold{caveat}:")
    say(format_table(summary[["metric", "class", "mean", "std", *[f"fold_{i}" for i in range(k)]]], "table"))
    for name in ("summary.csv", "summary.md", "summary.tex", "cases.csv", "summary.png", "cv.json"):
        say(f"written: {folder / name}")
    return 0
