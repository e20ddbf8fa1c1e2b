"""Runs for the analysis, catalog, compare, watch and clean tests: one real training run per test
session (copied where a test changes it) and runs written with ``MetricsLogger`` directly."""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
from pathlib import Path

from conftest import PY, ROOT, child_env

from medic.store.logger import MetricsLogger
from medic.store.sidecar import write_json_atomic

_REAL: dict[str, Path] = {}
REAL_ARGS = ["--epochs", "3", "--num_samples", "16", "--image_size", "32", "--log_batch_metrics",
             "--log_interval", "2", "--val_fraction", "0.25", "--lang", "en"]


def real_project(tmp_path_factory) -> Path:
    """A project holding one run of the real trainer (3 epochs, validation, batch CSV); made
    once per test session. Treat it as read-only: ``copy_real`` gives a private copy."""
    if "root" not in _REAL:
        root = tmp_path_factory.mktemp("real") / "project"
        root.mkdir()
        proc = subprocess.run([PY, "-m", "medic.train", *REAL_ARGS, "--output_dir", str(root)], cwd=root,
                              env=child_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        _REAL["root"] = root
    return _REAL["root"]


def copy_real(tmp_path_factory, dest: Path) -> Path:
    shutil.copytree(real_project(tmp_path_factory), dest)
    return dest


def write_run(root: Path, run_id: str, epochs: int = 5, *, extra: dict | None = None,
              batches: int = 0, status: str | None = "completed", pid: int | None = None,
              config: dict | None = None, monitor: str = "Avg_Loss", planned: int | None = None,
              epoch_time: float = 2.0, loss0: float = 1.0) -> dict:
    """A run written through ``MetricsLogger`` with a sidecar like the trainer's (``status``
    None: no sidecar). ``extra``: column name -> function of the epoch. Returns its rows."""
    extra = extra or {}
    mode = "max" if "Dice" in monitor else "min"
    logger = MetricsLogger(root, run_id, log_batch_metrics=batches > 0, extra_columns=list(extra),
                           monitor_mode=mode, sidecar=False)  # the sidecar (or none) written below
    rows, best = [], None
    for e in range(1, epochs + 1):
        losses = [loss0 / e * (1 + 0.05 * math.sin(b + e)) for b in range(max(batches, 1))]
        lr = 0.001 * 0.9 ** (e - 1)
        if batches:
            logger.log_batches(e, 0, losses, [lr] * len(losses))
        values = {name: fn(e) for name, fn in extra.items()}
        watched = sum(losses) / len(losses) if monitor == "Avg_Loss" else values[monitor]
        is_best = best is None or (watched < best if mode == "min" else watched > best)
        best = watched if is_best else best
        logger.log_epoch(e, avg_loss=sum(losses) / len(losses), min_batch_loss=min(losses),
                         max_batch_loss=max(losses), learning_rate=lr, epoch_time=epoch_time + 0.1 * e,
                         best_so_far=best, is_best=is_best, **values)
        rows.append({"Epoch": e, "Avg_Loss": sum(losses) / len(losses), "Learning_Rate": lr, **values})
    logger.close()
    if status is not None:
        cfg = {"epochs": planned or epochs, "batch_size": 4, "lr": 0.001, "monitor": monitor, **(config or {})}
        write_json_atomic(root / "metrics" / f"run_{run_id}.json", {
            "run_id": run_id, "status": status, "start_time": f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]} "
            f"{run_id[9:11]}:{run_id[11:13]}:{run_id[13:15]}", "end_time": None,
            "epochs": cfg["epochs"], "batches_per_epoch": batches, "world_size": 1, "monitor": monitor,
            "monitor_mode": mode, "extra_columns": list(extra), "log_batch_metrics": batches > 0,
            "pid": pid, "host": None, "message": "", "config": cfg})
    return {"rows": rows}


def cli(module: str, *args: str, cwd: Path, timeout: float = 120, env: dict | None = None):
    """``medic <command> args`` (``python -m medic.cli``) in ``cwd``; ``analyze`` runs as
    ``python -m medic.analyze``, the guide's form."""
    argv = ["-m", "medic.analyze"] if module == "analyze" else ["-m", "medic.cli", module]
    return subprocess.run([PY, *argv, *args], cwd=cwd, env=env or child_env(),
                          capture_output=True, text=True, timeout=timeout)


def bench():
    """The analysis benchmark module (for its CSV generator and its smoke run)."""
    spec = importlib.util.spec_from_file_location("bench_analysis", ROOT / "benchmarks" / "bench_analysis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []
