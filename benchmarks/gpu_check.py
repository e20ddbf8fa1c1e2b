"""GPU readiness, measured on a CUDA machine in under five minutes.

    python benchmarks/gpu_check.py                       # sync audit + overhead benchmark on cuda:0
    python benchmarks/gpu_check.py --extra "--amp --channels_last"
    python benchmarks/gpu_check.py --sync-audit DIR      # only the audit (used by tests/test_gpu.py)

1. **Sync audit.** One real ``medic train`` run in this process on CUDA with
   ``torch.cuda.set_sync_debug_mode("error")`` around every training step: any host-device sync
   inside a step (``.item()``, ``.cpu()``, a branch on a device value) raises. Only the
   log-interval flush — the one sync per ``--log_interval`` steps by design — runs with the check
   off; the audit reports how many flushes there were per step. The timing columns
   (``medic.train.telemetry``) are audited too: their CUDA events are read with ``query`` (no
   wait) during the epoch, and an event is waited for (``Event.synchronize``) only once the
   step loop has ended; the audit counts those waits, and records each epoch's
   Samples_Per_Second, Data_Seconds and Peak_Memory_MB.
2. **Overhead.** ``bench_overhead``'s three variants (bare loop, medic epoch CSV, medic batch CSV
   at ``--log_interval 1``) alternating on the GPU; the same samples/s ratios as on CPU.

Writes ``benchmarks/out/gpu.md`` and prints it. Without CUDA it says so and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, PY, REPO, Workload, child_env, machine, run_bare, run_medic  # noqa: E402

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def sync_audit(out_dir: Path, epochs: int = 2, log_interval: int = 5, extra: list[str] | None = None) -> dict:
    """Train on CUDA in this process with syncs inside a step made errors; returns what happened.

    ``{"ok": bool, "error": str, "steps": n, "flushes": n, "epochs": n}``."""
    import csv

    import torch
    from medic.train import loop
    from medic.train.launch.roles import main as train_main
    from medic.train.telemetry import EpochTimer

    counts = {"steps": 0, "flushes": 0, "epochs": 0, "event_waits_in_steps": 0, "event_waits_after_loop": 0}
    real_epoch, real_record = loop.train_epoch, loop.record_windows
    real_wait, real_end = torch.cuda.Event.synchronize, EpochTimer.end_loop
    after_loop = [False]

    def event_wait(self):  # sync debug mode does not see event waits: count them
        counts["event_waits_after_loop" if after_loop[0] else "event_waits_in_steps"] += 1
        return real_wait(self)

    def end_loop(self):
        after_loop[0] = True
        try:
            return real_end(self)
        finally:
            after_loop[0] = False

    def train_epoch(*args, **kwargs):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            stopped = real_epoch(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        counts["epochs"] += 1
        return stopped

    def record_windows(packed, intervals, *args, **kwargs):
        # the designed sync point: one per log interval (and one at the end of the epoch)
        torch.cuda.set_sync_debug_mode(0)
        try:
            return real_record(packed, intervals, *args, **kwargs)
        finally:
            counts["flushes"] += len(intervals)
            counts["steps"] += sum(end - start for start, end, _ in intervals)
            torch.cuda.set_sync_debug_mode("error")

    loop.train_epoch, loop.record_windows = train_epoch, record_windows
    torch.cuda.Event.synchronize, EpochTimer.end_loop = event_wait, end_loop
    error = ""
    try:
        code = train_main(["--device", "cuda", "--epochs", str(epochs), "--num_samples", "64",
                           "--image_size", "64", "--log_interval", str(log_interval), "--log_batch_metrics",
                           "--output_dir", str(out_dir), "--lang", "en", *(extra or [])])
        if code:
            error = f"medic train exited with {code}"
    except RuntimeError as err:  # what set_sync_debug_mode("error") raises
        error = str(err).splitlines()[0]
    finally:
        loop.train_epoch, loop.record_windows = real_epoch, real_record
        torch.cuda.Event.synchronize, EpochTimer.end_loop = real_wait, real_end
        torch.cuda.set_sync_debug_mode(0)
    if not error and counts["event_waits_in_steps"]:
        error = f"{counts['event_waits_in_steps']} CUDA event waits inside the step loop"
    timing = []
    for path in sorted((out_dir / "metrics").glob("epoch_metrics_*.csv")):
        with open(path, newline="") as f:
            timing += [{k: float(r[k]) for k in ("Samples_Per_Second", "Data_Seconds", "Peak_Memory_MB")
                        if r.get(k)} for r in csv.DictReader(f)]
    return {"ok": not error, "error": error, **counts, "timing": timing}


def overhead(w: Workload, rounds: int, work: Path, budget_s: float, started: float) -> dict:
    """Alternate the three variants on the GPU until ``rounds`` or the time budget runs out."""
    runs: dict[str, list] = {"bare": [], "medic": [], "medic_batch": []}
    order = list(runs)
    for r in range(rounds):
        if r and time.perf_counter() - started > budget_s * (r / (r + 1)):
            print(f"  stopping after {r} rounds to stay within {budget_s:.0f} s", flush=True)
            break
        for v in order[r % 3:] + order[:r % 3]:
            name = f"{v}_{r}"
            res = run_bare(w, work, name) if v == "bare" else run_medic(
                w, work, name, ["--log_batch_metrics", "--log_interval", "1"] if v == "medic_batch" else [])
            runs[v].append(res.samples_per_s)
            print(f"  round {r + 1} {v:<12} {res.samples_per_s:9.1f} samples/s "
                  f"(epochs {', '.join(f'{t:.2f}' for t in res.epoch_times)} s)", flush=True)
    return runs


def render(audit: dict, runs: dict, w: Workload) -> str:
    import statistics
    info = machine()
    med = {v: statistics.median(x) for v, x in runs.items() if x}
    lines = [f"# GPU check — {info.get('cuda')}", "",
             f"torch {info.get('torch')}, {info.get('cpus')} CPU cores. Workload: UNet, {w.image_size}x{w.image_size}, "
             f"batch {w.batch_size}, {w.num_samples} samples/epoch, {w.epochs} epochs (first left out), "
             f"{w.nproc} process(es), extra flags: {' '.join(w.extra) or 'none'}.", "",
             f"Sync audit (set_sync_debug_mode('error') inside every step): "
             f"{'passed' if audit.get('ok') else 'FAILED: ' + audit.get('error', '')}; "
             f"{audit.get('flushes', 0)} flushes (the designed sync points) in {audit.get('epochs', 0)} epochs; "
             f"CUDA event waits: {audit.get('event_waits_in_steps', 0)} inside the step loop, "
             f"{audit.get('event_waits_after_loop', 0)} after it.", "",
             "Timing columns of the audit run, per epoch: " + "; ".join(
                 f"{t.get('Samples_Per_Second', 0):.1f} samples/s, data wait {t.get('Data_Seconds', 0):.3f} s, "
                 f"peak {t.get('Peak_Memory_MB', 0):.0f} MB" for t in audit.get("timing", [])) + ".", "",
             "| variant | samples/s (median) | vs bare | each run |", "|---|---|---|---|"]
    for v, xs in runs.items():
        if xs:
            lines.append(f"| {v} | {med[v]:.1f} | {med[v] / med['bare']:.3f} | {', '.join(f'{x:.1f}' for x in xs)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sync-audit", metavar="DIR", help="only run the sync audit, output under DIR; print JSON")
    p.add_argument("--extra", default="", help="extra medic train / bare loop flags, e.g. '--amp --channels_last'")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_samples", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nproc", type=int, default=1, help="processes (one GPU each) for the overhead runs")
    p.add_argument("--budget_s", type=float, default=270, help="stop starting rounds after this many seconds")
    p.add_argument("--out", default=str(BENCH / "out" / "gpu.md"))
    args = p.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine; nothing to check", file=sys.stderr)
        return 2
    if args.sync_audit:
        print(json.dumps(sync_audit(Path(args.sync_audit), extra=shlex.split(args.extra))))
        return 0
    if args.nproc > torch.cuda.device_count():
        print(f"gpu_check: --nproc {args.nproc} needs as many GPUs; this machine has {torch.cuda.device_count()}",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="medic-gpu-"))
    # the audit in its own process: the debug mode and the CUDA context stay out of this one
    proc = subprocess.run([PY, str(Path(__file__).resolve()), "--sync-audit", str(work / "audit"),
                           "--extra", args.extra], capture_output=True, text=True, env=child_env(4), timeout=600)
    try:
        audit = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        audit = {"ok": False, "error": f"the audit process failed: {proc.stderr.strip()[-500:]}"}
    print(f"sync audit: {audit}", flush=True)
    threads = max(1, min(8, (os.cpu_count() or 1) // args.nproc))
    w = Workload(nproc=args.nproc, threads=threads, epochs=args.epochs, num_samples=args.num_samples,
                 image_size=args.image_size, batch_size=args.batch_size, device="cuda", extra=shlex.split(args.extra))
    runs = overhead(w, args.rounds, work, args.budget_s, started)
    text = render(audit, runs, w)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    print(f"took {time.perf_counter() - started:.0f} s; written: {out}")
    return 0 if audit.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
