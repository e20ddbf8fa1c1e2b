"""Shared pieces of the launcher, live-monitor, notebook and browser tests.

Also a script: ``python tests/_nb_helpers.py writer ROOT RUN_ID EPOCHS INTERVAL`` is a stand-in
trainer that writes a run's files at a known rate (epoch rows, batch rows, sidecar, progress lines)
and, on SIGINT/SIGTERM, marks the run stopped and exits, as the trainer does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from medic.store.logger import MetricsLogger  # noqa: E402
from medic.store.paths import Project, reserve_run_id  # noqa: E402
from medic.store.sidecar import now_str, update_sidecar, write_json_atomic  # noqa: E402

BATCHES = 4


def child_env(**extra: str) -> dict[str, str]:
    """The environment for processes that import medic from this checkout (no MEDIC_* leaking in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIC_", "TORCHELASTIC"))}
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return dict(env, PYTHONPATH=path, PYTHONUNBUFFERED="1", **extra)


def start_sidecar(project: Project, run_id: str, epochs: int, extra=(), status="running") -> None:
    write_json_atomic(project.sidecar(run_id), {
        "run_id": run_id, "status": status, "start_time": now_str(), "end_time": None,
        "epochs": epochs, "batches_per_epoch": BATCHES, "world_size": 1, "monitor": "Avg_Loss",
        "monitor_mode": "min", "extra_columns": list(extra), "log_batch_metrics": True,
        "pid": os.getpid(), "message": "",
        "config": {"epochs": epochs, "batch_size": 4, "lr": 0.001, "num_samples": 16}})


def write_epoch(logger: MetricsLogger, project: Project, run_id: str, epoch: int, epochs: int,
                log) -> None:
    losses = [1.0 / (epoch + b / BATCHES) for b in range(BATCHES)]
    for b, loss in enumerate(losses):
        logger.log_batch(epoch, b, loss, 0.001)
        log.write(f"Epoch [{epoch}/{epochs}] - Progress {100 * b / BATCHES:.1f}% ({b}/{BATCHES}) "
                  f"- Batch Loss: {loss:.6f} - LR: 0.00100000\n")
    log.flush()
    logger.log_epoch(epoch, avg_loss=sum(losses) / BATCHES, min_batch_loss=min(losses),
                     max_batch_loss=max(losses), learning_rate=0.001 * 0.9 ** epoch, epoch_time=0.5,
                     Val_Dice=0.5 + epoch / (2 * epochs))
    update_sidecar(project.sidecar(run_id), epochs_done=epoch)


def make_run(root: Path, epochs: int = 5, status: str = "completed", run_id: str | None = None,
             lr: float = 0.001) -> str:
    """A finished run written at once; returns its id."""
    project = Project.at(root)
    run_id = run_id or reserve_run_id(project)
    project.log.mkdir(parents=True, exist_ok=True)
    start_sidecar(project, run_id, epochs, ["Val_Dice"])
    with MetricsLogger(root, run_id, log_batch_metrics=True, extra_columns=["Val_Dice"]) as logger, \
            open(project.log_file(run_id), "a") as log:
        for epoch in range(1, epochs + 1):
            write_epoch(logger, project, run_id, epoch, epochs, log)
    sc = json.loads(project.sidecar(run_id).read_text())
    sc["config"]["lr"] = lr
    sc.update(status=status, end_time=now_str())
    write_json_atomic(project.sidecar(run_id), sc)
    return run_id


def start_writer(root: Path, run_id: str, epochs: int, interval: float) -> subprocess.Popen:
    """The stand-in trainer as a process of its own session (like a launched job)."""
    return subprocess.Popen([PY, __file__, "writer", str(root), run_id, str(epochs), str(interval)],
                            env=child_env(), start_new_session=True)


def _writer(root: str, run_id: str, epochs: int, interval: float) -> int:
    project = Project.at(root)
    project.log.mkdir(parents=True, exist_ok=True)
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(1))
    start_sidecar(project, run_id, epochs, ["Val_Dice"])
    status = "completed"
    with MetricsLogger(root, run_id, log_batch_metrics=True, extra_columns=["Val_Dice"]) as logger, \
            open(project.log_file(run_id), "a") as log:
        for epoch in range(1, epochs + 1):
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline and not stop:
                time.sleep(0.02)
            if stop:
                status = "stopped"
                break
            write_epoch(logger, project, run_id, epoch, epochs, log)
    update_sidecar(project.sidecar(run_id), status=status, end_time=now_str(),
                   message="interrupted" if stop else "")
    return 0


def wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        sys.exit(_writer(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
    raise SystemExit(f"unknown command {sys.argv[1:]}")
