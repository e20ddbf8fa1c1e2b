"""SLURM: time to first step against a local start, and the requeue round trip.

    eval "$(tests/slurm/start_cluster.sh)"      # or any cluster: SLURM_CONF / sbatch on PATH
    python benchmarks/bench_slurm.py --rounds 3

- **First step.** From the command (``medic train``, or ``medic train --launcher slurm``) to the
  first progress line in the run's log, default workload (684 samples of 64x64, batch 4), one
  process; local and SLURM alternate, so both see the same machine. Each run is then ended.
- **Requeue round trip**, for the two ways a run is requeued: the time-limit warning (USR2 to the
  batch script, sent here with ``scancel --batch --signal=USR2``, exactly what
  ``--signal=B:USR2@grace`` delivers) and ``scontrol requeue`` (SIGTERM to every process, as a
  preemption). Timed from the signal: the checkpoint written, the job running again, and the first
  progress line of the resumed run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PY, REPO, child_env, load_average, median, table  # noqa: E402

SMALL = ["--num_samples", "64", "--image_size", "32", "--epochs", "200", "--log_interval", "1", "--save_interval", "1000"]


def env() -> dict[str, str]:
    e = child_env(threads=1)
    e["PYTHONPATH"] = str(REPO)
    return e


def medic(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "medic.cli", *args], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=300, check=True)


def wait_until(condition, timeout: float = 600, every: float = 0.05):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {condition}")


def progress_lines(log: Path) -> list[str]:
    try:
        return [line for line in log.read_text(errors="replace").splitlines() if "Progress" in line or "Resuming" in line]
    except OSError:
        return []


def job_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], env=env(), capture_output=True,
                         text=True)
    return out.stdout.strip()


def submit(cwd: Path, args: list[str]) -> tuple[str, str]:
    out = medic(["train", "--launcher", "slurm", "--threads", "1", "--lang", "en", *args], cwd).stdout
    found = re.search(r"run (\S+): SLURM job (\d+) submitted", out)
    return found.group(1), found.group(2)


def end_job(job_id: str) -> None:
    subprocess.run(["scancel", job_id], env=env(), capture_output=True)
    wait_until(lambda: job_state(job_id) not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING"), 120, 0.5)


def first_step_local(work: Path) -> float:
    root = Path(tempfile.mkdtemp(dir=work))
    t0 = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "medic.cli", "train", "--epochs", "1", "--log_interval", "1", "--lang", "en",
                             "--threads", "1"], cwd=root, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: any("Progress" in p for log in root.glob("log/training_*.log") for p in progress_lines(log)))
        return time.perf_counter() - t0
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def first_step_slurm(work: Path) -> float:
    root = Path(tempfile.mkdtemp(dir=work))
    t0 = time.perf_counter()
    run_id, job_id = submit(root, ["--epochs", "1", "--log_interval", "1"])
    try:
        wait_until(lambda: any("Progress" in p for p in progress_lines(root / "log" / f"training_{run_id}.log")))
        return time.perf_counter() - t0
    finally:
        end_job(job_id)
        shutil.rmtree(root, ignore_errors=True)


def requeue_round_trip(work: Path, how: str) -> dict[str, float]:
    """Seconds from the signal to: the checkpoint, the job running again, the first resumed step."""
    root = Path(tempfile.mkdtemp(dir=work))
    run_id, job_id = submit(root, SMALL)
    log = root / "log" / f"training_{run_id}.log"
    last = root / "checkpoints" / run_id / "last.pth"
    try:
        wait_until(lambda: len(progress_lines(log)) >= 20)
        before = last.stat().st_mtime if last.exists() else 0.0
        t0 = time.time()
        if how == "warning":
            subprocess.run(["scancel", "--batch", "--signal=USR2", job_id], env=env(), check=True)
        else:
            subprocess.run(["scontrol", "requeue", job_id], env=env(), check=True)
        wait_until(lambda: last.exists() and last.stat().st_mtime > before)
        checkpoint = last.stat().st_mtime - t0
        wait_until(lambda: job_state(job_id) in ("PENDING", "REQUEUED", "COMPLETING"), 120, 0.1)
        wait_until(lambda: job_state(job_id) == "RUNNING", 300, 0.1)
        running = time.time() - t0
        wait_until(lambda: "Resuming" in "\n".join(progress_lines(log)) and
                   "Progress" in "\n".join(progress_lines(log)).rsplit("Resuming", 1)[1])
        resumed = time.time() - t0
        side = json.loads((root / "metrics" / f"run_{run_id}.json").read_text())
        return {"checkpoint": checkpoint, "running": running, "resumed": resumed, "requeues": side.get("requeues")}
    finally:
        end_job(job_id)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", choices=("first_step", "requeue"), action="append", default=[])
    args = parser.parse_args()
    if shutil.which("sbatch") is None:
        print("no sbatch on PATH: start tests/slurm/start_cluster.sh (as root) or run on a login node")
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    print(f"load average before: {load_average()}")
    if "first_step" not in args.skip:
        local, slurm = [], []
        for _ in range(args.rounds):
            local.append(first_step_local(work))
            slurm.append(first_step_slurm(work))
        print(table(["start, default workload, 1 process", "median", "rounds (s)"],
                    [["local `medic train`", f"{median(local):.1f} s", ", ".join(f"{v:.1f}" for v in local)],
                     ["`medic train --launcher slurm`", f"{median(slurm):.1f} s", ", ".join(f"{v:.1f}" for v in slurm)]]))
    if "requeue" not in args.skip:
        rows = []
        for how in ("warning", "scontrol requeue"):
            for _ in range(max(1, args.rounds - 1)):
                r = requeue_round_trip(work, how)
                rows.append([how, f"{r['checkpoint']:.1f} s", f"{r['running']:.1f} s", f"{r['resumed']:.1f} s",
                             str(r["requeues"])])
        print(table(["requeue by", "checkpoint written", "job running again", "first resumed step", "requeues"], rows))
    print(f"load average after: {load_average()}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
