"""Shared pieces of the benchmarks: starting ``medic train`` and the bare loop the same way,
reading their epoch times, the machine's facts, and Markdown tables.

Throughput is steady-state: every run's first epoch (process start-up, ``import monai``, the first
allocations) is left out; samples/s is the training-set size over each later epoch's time, and a
run's figure is the median over those epochs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
PY = sys.executable
TORCHRUN = [PY, "-m", "torch.distributed.run"]
FAILURES = BENCH / "out" / "failures"


class BenchError(RuntimeError):
    """A benchmark run failed; the message names the file that keeps its output."""


@dataclass
class Workload:
    """One training workload, run identically by medic and the bare loop."""

    nproc: int = 2
    threads: int = 1
    epochs: int = 3
    num_samples: int = 192
    image_size: int = 64
    batch_size: int = 4
    device: str = "cpu"
    extra: list[str] = field(default_factory=list)  # e.g. ["--amp", "--channels_last"]

    def label(self) -> str:
        return (f"{self.nproc} proc{'s' if self.nproc > 1 else ''} x "
                f"{self.threads} thread{'s' if self.threads > 1 else ''}")


@dataclass
class Section:
    """One part of the results: a Markdown body, and its lines of the summary table
    (claim, measured, goal, verdict)."""

    title: str
    body: str
    summary: list[list[str]]
    data: dict


@dataclass
class RunResult:
    variant: str
    epoch_times: list[float]
    samples: int
    wall: float

    @property
    def samples_per_s(self) -> float:
        """Median over the epochs after the first (all of them if there is only one)."""
        steady = [t for t in (self.epoch_times[1:] or self.epoch_times) if t > 0]
        # a tiny epoch can round to 0.00 s in the CSV: no rate then, rather than a division by zero
        return statistics.median(self.samples / t for t in steady) if steady else float("nan")


def same_process_parser(doc: str, rounds: int) -> argparse.ArgumentParser:
    """The flags of the benchmarks that alternate variants inside one set of processes
    (``inproc_ab.py``, ``scaling_ab.py``): the workload of ``medic train``'s defaults, rounds, out."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--num_samples", type=int, default=192)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--out", default="", help="JSON file for the results (rank 0)")
    return p


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    for name in ("MEDIC_RUN_ID", "RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        env.pop(name, None)
    return env


def run_cmd(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> float:
    """Run ``cmd`` with its output in ``log``; return its wall time. Raise ``BenchError`` on failure."""
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        try:
            code = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.perf_counter() - t0
    if code != 0:
        # keep the whole output: the run's folder is temporary
        FAILURES.mkdir(parents=True, exist_ok=True)
        kept = FAILURES / f"{time.strftime('%Y%m%d_%H%M%S')}_{log.parent.name}.txt"
        kept.write_text(f"$ {' '.join(cmd)}\n\n" + log.read_text(errors="replace"))
        raise BenchError(f"{' '.join(cmd[:6])} ... exited with {code} (output kept in {kept})")
    return wall


def medic_cmd(w: Workload, out_dir: Path, flags: list[str], launcher: list[str] | None = None) -> list[str]:
    """``medic train`` with this workload (``python -m medic.train``; it starts torchrun itself
    when ``nproc`` > 1). ``launcher`` replaces the entry point (the profiling wrapper)."""
    args = ["--epochs", str(w.epochs), "--num_samples", str(w.num_samples), "--image_size", str(w.image_size),
            "--batch_size", str(w.batch_size), "--threads", str(w.threads), "--device", w.device,
            "--output_dir", str(out_dir), "--lang", "en", "--save_interval", str(10**6), *w.extra, *flags]
    if launcher is None:
        return [PY, "-m", "medic.train", "--nproc_per_node", str(w.nproc), *args]
    return standalone_torchrun(w.nproc) + launcher + args if w.nproc > 1 else [PY, *launcher, *args]


def standalone_torchrun(nproc: int) -> list[str]:
    """torchrun on one machine, bound to loopback, as ``medic train`` starts it."""
    return TORCHRUN + [f"--nproc_per_node={nproc}", "--nnodes=1", "--rdzv_backend=c10d",
                       "--rdzv_endpoint=127.0.0.1:0", "--local_addr=127.0.0.1"]


def epoch_times_from_csv(metrics_dir: Path) -> list[float]:
    files = sorted(metrics_dir.glob("epoch_metrics_*.csv"))
    if len(files) != 1:
        raise BenchError(f"expected one epoch CSV in {metrics_dir}, found {len(files)}")
    with open(files[0], newline="") as f:
        return [float(row["Epoch_Time_Seconds"]) for row in csv.DictReader(f)]


def run_medic(w: Workload, work: Path, name: str, flags: list[str], timeout: float = 900) -> RunResult:
    """One ``medic train`` run; its epoch times come from its own epoch CSV."""
    out = work / name
    out.mkdir(parents=True)
    wall = run_cmd(medic_cmd(w, out, flags), child_env(w.threads), out / "console.txt", timeout)
    times = epoch_times_from_csv(out / "metrics")
    if len(times) != w.epochs:
        raise BenchError(f"{name}: {len(times)} epoch rows, expected {w.epochs}")
    return RunResult(name, times, w.num_samples, wall)


def run_bare(w: Workload, work: Path, name: str, timeout: float = 900) -> RunResult:
    """One run of the bare loop (``bare_loop.py``), under torchrun when ``nproc`` > 1."""
    out = work / name
    out.mkdir(parents=True)
    result = out / "times.json"
    args = [str(BENCH / "bare_loop.py"), "--epochs", str(w.epochs), "--num_samples", str(w.num_samples),
            "--image_size", str(w.image_size), "--batch_size", str(w.batch_size), "--threads", str(w.threads),
            "--device", w.device, "--out", str(result), *w.extra]
    cmd = standalone_torchrun(w.nproc) + args if w.nproc > 1 else [PY, *args]
    wall = run_cmd(cmd, child_env(w.threads), out / "console.txt", timeout)
    data = json.loads(result.read_text())
    return RunResult(name, data["epoch_times"], data["samples"], wall)


def run_same_process(script: str, w: Workload, rounds: int, out: Path, extra: list[str] = ()) -> dict:
    """One run of a same-process A/B script (see ``same_process_parser``) with this workload,
    under torchrun when ``nproc`` > 1; returns what rank 0 wrote."""
    out.mkdir(parents=True, exist_ok=True)
    result = out / "result.json"
    result.unlink(missing_ok=True)
    args = [str(BENCH / script), "--rounds", str(rounds), "--num_samples", str(w.num_samples),
            "--image_size", str(w.image_size), "--batch_size", str(w.batch_size), "--out", str(result), *extra]
    cmd = standalone_torchrun(w.nproc) + args if w.nproc > 1 else [PY, *args]
    run_cmd(cmd, child_env(w.threads), out / "console.txt", timeout=900)
    return json.loads(result.read_text())


def with_retry(fn, failures: list[str], *args):
    """Call ``fn(*args)``; if the run fails, note why in ``failures`` and try once more (a crash
    is reported, not hidden, but one bad run does not cost the whole benchmark)."""
    try:
        return fn(*args)
    except BenchError as err:
        failures.append(str(err))
        return fn(*args)


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    info = {"python": platform.python_version(), "cpus": str(os.cpu_count()),
            "platform": platform.platform(terse=True)}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch  # the benchmark runner itself may import torch; the readers never do
        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        pass
    return info


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table."""
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(v: float, digits: int = 1) -> str:
    return "n/a" if v != v else f"{v:,.{digits}f}"
