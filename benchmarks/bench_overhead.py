"""Benchmark: what monitoring costs the training loop.

    python benchmarks/bench_overhead.py               # 2 processes x 1 thread, 2 rounds
    python benchmarks/bench_overhead.py --nproc 1 --threads 2 --rounds 5 --num_samples 384

Three variants of the same workload run alternately, round after round (the order rotates, so
no variant always goes first): the bare DDP loop (``bare_loop.py``: no logging at all),
``medic train`` with epoch logging (default ``--log_interval 10``), and ``medic train
--log_batch_metrics --log_interval 1`` (a batch row and a progress line every step). samples/s
comes from medic's own epoch CSV (``Epoch_Time_Seconds``) and from the bare loop's epoch timer,
the first epoch of every run left out.

Identical runs differ by several percent on a small machine, more than the cost being measured,
so two more measurements follow: ``inproc_ab.py`` alternates whole epochs of the bare step loop
and of medic's own ``train_epoch`` inside one set of processes (run-to-run differences cancel),
and a run of medic with timers around its per-step parts (``profile_step.py``) shows where any
remaining cost goes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BENCH, RunResult, Section, Workload, child_env, epoch_times_from_csv,  # noqa: E402
                    fmt, load_average, median, medic_cmd, run_bare, run_cmd, run_medic, run_same_process,
                    table, with_retry)

VARIANTS = {
    "bare": "bare DDP loop (no logging)",
    "medic": "medic train, epoch CSV (--log_interval 10)",
    "medic_batch": "medic train, batch CSV + progress every step (--log_batch_metrics --log_interval 1)",
}
BATCH_FLAGS = ["--log_batch_metrics", "--log_interval", "1"]
GOAL = 0.98  # samples/s within 2% of the bare loop
INPROC_GOAL = 0.99  # inside one set of processes, with the timing columns recorded (the noise is smaller)


def sizes(mode: str) -> tuple[Workload, int]:
    """The workload and the number of rounds for a mode."""
    if mode == "smoke":
        return Workload(nproc=2, threads=1, epochs=2, num_samples=8, image_size=16), 1
    if mode == "full":
        return Workload(nproc=2, threads=1, epochs=5, num_samples=384), 5
    return Workload(nproc=2, threads=1, epochs=3, num_samples=192), 2


INPROC_ROUNDS = {"smoke": 1, "quick": 8, "full": 12}
# separate sets of processes for the same-process comparison: one set can favour either side by a
# few percent (where its processes landed), so the ratio is pooled over several
INPROC_SETS = {"smoke": 1, "quick": 3, "full": 4}


def run_variant(variant: str, w: Workload, work: Path, name: str):
    if variant == "bare":
        return run_bare(w, work, name)
    return run_medic(w, work, name, BATCH_FLAGS if variant == "medic_batch" else [])


def measure(w: Workload, rounds: int, work: Path, progress=print, failures: list | None = None) -> dict:
    """Alternate the three variants for ``rounds`` rounds; returns every run's numbers."""
    order = list(VARIANTS)
    runs = {v: [] for v in VARIANTS}
    failures = [] if failures is None else failures
    for r in range(rounds):
        rotated = order[r % len(order):] + order[:r % len(order)]
        for variant in rotated:
            res = with_retry(lambda: run_variant(variant, w, work, f"{variant}_{r}_{len(failures)}"), failures)
            runs[variant].append(res)
            progress(f"  round {r + 1}/{rounds} {variant:<12} {res.samples_per_s:8.1f} samples/s "
                     f"(epochs {', '.join(f'{t:.2f}' for t in res.epoch_times)} s; run {res.wall:.0f} s)")
    return as_data(runs)


def as_data(runs: dict) -> dict:
    return {v: [{"samples_per_s": x.samples_per_s, "epoch_times": x.epoch_times, "wall": x.wall} for x in rs]
            for v, rs in runs.items()}


def smoke(w: Workload, work: Path) -> tuple[dict, dict, dict]:
    """Every variant once, all at the same time, the profiled run standing in for the batch-logging
    one: this checks that the benchmark works end to end in the time of one run; its numbers
    mean nothing."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {v: pool.submit(run_variant, v, w, work, f"{v}_0") for v in ("bare", "medic")}
        prof = pool.submit(profile, w, work)
        ab = pool.submit(inproc, w, INPROC_ROUNDS["smoke"], work)
        runs = {v: [f.result()] for v, f in futures.items()}
        ranks, batch_run = prof.result()
        runs["medic_batch"] = [batch_run]
        return as_data(runs), ranks, ab.result()


def profile(w: Workload, work: Path) -> tuple[dict, RunResult]:
    """One medic run at --log_interval 1 with the per-step parts timed, on every rank. Returns
    each rank's per-step numbers, and the run's own samples/s (from its epoch CSV)."""
    out = work / "profile"
    out.mkdir(parents=True)
    env = child_env(w.threads)
    env["MEDIC_PROFILE_OUT"] = str(out / "profile")
    wall = run_cmd(medic_cmd(w, out, BATCH_FLAGS, launcher=[str(BENCH / "profile_step.py")]), env,
                   out / "console.txt", timeout=900)
    ranks = {}
    for path in sorted(out.glob("profile.rank*.json")):
        data = json.loads(path.read_text())
        ranks[data["rank"]] = summarize_profile(data)
    if 0 not in ranks:
        raise RuntimeError(f"the profiled run wrote no profile (see {out / 'console.txt'})")
    return ranks, RunResult("profile", epoch_times_from_csv(out / "metrics"), w.num_samples, wall)


def inproc(w: Workload, rounds: int, work: Path, sets: int = 1) -> dict:
    """medic's ``train_epoch`` against the bare step loop in the same processes (``inproc_ab.py``),
    whole epochs alternating, in ``sets`` separate sets of processes; returns each variant's epoch
    times (all sets, in order) and each set's own."""
    results = [run_same_process("inproc_ab.py", w, rounds, work / f"inproc{i}", ["--threads", str(w.threads)])
               for i in range(sets)]
    merged = {**results[0], "epoch_times": {v: [t for r in results for t in r["epoch_times"][v]]
                                            for v in results[0]["epoch_times"]}}
    merged["sets"] = [r["epoch_times"] for r in results]
    return merged


def summarize_profile(data: dict) -> dict:
    """Per-step microseconds of each part over the epochs after the first."""
    epochs = data["epochs"][1:] or data["epochs"]
    steps = sum(e["steps"] for e in epochs)
    seconds = sum(e["seconds"] for e in epochs)
    parts = {k: sum(e["parts"][k]["seconds"] for e in epochs) / steps * 1e6 for k in epochs[0]["parts"]}
    save = data.get("save_epoch") or {"seconds": 0.0, "calls": 0}
    return {"steps": steps, "step_us": seconds / steps * 1e6, "parts_us": parts,
            "bookkeeping_us": data["bookkeeping_us"], "optimizer_us": data["optimizer_us"],
            "epoch_s": seconds / len(epochs),
            "checkpoint_ms": save["seconds"] / save["calls"] * 1e3 if save["calls"] else 0.0}


def report(w: Workload, runs: dict, prof: dict | None, failures: list[str] = (), ab: dict | None = None) -> Section:
    med = {v: median(x["samples_per_s"] for x in rs) for v, rs in runs.items()}
    best = {v: best_epoch(rs, w.num_samples) for v, rs in runs.items()}
    bare = med["bare"]
    rows = []
    for v, rs in runs.items():
        values = [x["samples_per_s"] for x in rs]
        rows.append([VARIANTS[v], fmt(med[v]), f"{med[v] / bare:.3f}" if bare else "n/a",
                     ", ".join(fmt(x) for x in values), f"±{half_spread(values) * 100:.1f}%",
                     f"{fmt(best[v])} ({best[v] / best['bare']:.3f})"])
    # each round's runs are neighbours in time, so their ratio cancels slow drifts in the machine
    paired = {v: median(a["samples_per_s"] / b["samples_per_s"] for a, b in zip(runs[v], runs["bare"]))
              for v in ("medic", "medic_batch")}
    body = (f"Workload: default model (MONAI 2D UNet 16-32-64-128), {w.image_size}x{w.image_size} images, "
            f"batch {w.batch_size} per process, {w.num_samples} samples/epoch, {w.label()}, device {w.device}, "
            f"{w.epochs} epochs per run (the first left out), {len(runs['bare'])} alternating rounds.\n\n")
    body += table(["variant", "samples/s (median)", "vs bare", "each run", "half-spread",
                   "fastest epoch (vs bare)"], rows)
    body += (f"\n\nPer-round ratio (median): medic {paired['medic']:.3f}, medic with batch logging "
             f"{paired['medic_batch']:.3f}. The fastest epoch of each variant is the one least disturbed "
             f"by anything else on the machine. Epoch_Time_Seconds, like the bare loop's timer, leaves out "
             f"process start-up and the checkpoint medic writes after each epoch (its cost is below).\n")
    for failure in failures:
        body += f"\n**A run failed and was repeated**: {failure}\n"
    ab_ratio = {}
    if ab:
        ab_text, ab_ratio, ab_sets = inproc_table(ab)
        body += "\n" + ab_text
    if prof:
        body += "\n" + profile_table(prof)
    summary = []
    for v in ("medic", "medic_batch"):
        ratio = med[v] / bare if bare else float("nan")
        noise = half_spread([x["samples_per_s"] for x in runs["bare"]]) + \
            half_spread([x["samples_per_s"] for x in runs[v]])
        summary.append([f"Trainer overhead, separate runs: {VARIANTS[v]}", f"{ratio:.3f} of the bare loop "
                        f"({fmt(med[v])} vs {fmt(bare)} samples/s, {w.label()}, {len(runs[v])} runs each)",
                        f"≥ {GOAL:.2f}", verdict(ratio, noise)])
        if v in ab_ratio:
            summary.append([f"Trainer overhead, same processes, alternating epochs, timing columns on: "
                            f"{VARIANTS[v]}", f"{ab_ratio[v]:.3f} of the bare loop ({w.label()}; per set of "
                            f"processes: {', '.join(f'{x:.3f}' for x in ab_sets[v])})", f"≥ {INPROC_GOAL:.2f}",
                            verdict(ab_ratio[v], half_spread(ab_sets[v]), INPROC_GOAL)])
    return Section("Trainer overhead", body, summary,
                   {"workload": w.__dict__, "runs": runs, "median": med, "paired": paired, "best_epoch": best,
                    "profile": prof, "inproc": ab, "inproc_ratio": ab_ratio, "failures": list(failures),
                    "load_average": load_average()})


def verdict(ratio: float, noise: float, goal: float = GOAL) -> str:
    """'met' / 'not met', or 'within noise' when the gap to the goal is smaller than the runs'
    own spread (``noise``: the half-spreads of the two variants' runs, added, as a fraction)."""
    if ratio >= goal:
        return "met"
    if goal - ratio <= noise:
        return f"within noise (runs vary ±{noise * 100:.0f}%)"
    return "not met"


def half_spread(values: list[float]) -> float:
    return (max(values) - min(values)) / 2 / median(values) if values else float("nan")


def inproc_table(ab: dict) -> tuple[str, dict, dict]:
    """The same-process A/B: epoch times, samples/s and the paired ratios, pooled over the sets of
    processes (the median of every round's ratio) and per set."""
    t, samples = ab["epoch_times"], ab["samples"]
    sets = ab.get("sets") or [t]
    paired = {v: [b / m for st in sets for b, m in zip(st["bare"], st[v])] for v in ("medic", "medic_batch")}
    ratios = {v: median(r) for v, r in paired.items()}
    per_set = {v: [median(b / m for b, m in zip(st["bare"], st[v])) for st in sets] for v in paired}
    rows = []
    for v in VARIANTS:
        rate = samples / median(t[v])
        rows.append([VARIANTS[v].replace("medic train, ", "medic `train_epoch`, "), fmt(rate),
                     "1.000" if v == "bare" else f"{ratios[v]:.3f}",
                     "" if v == "bare" else ", ".join(f"{x:.3f}" for x in per_set[v]),
                     f"{samples / min(t[v]):.1f}", len(t[v])])
    text = (f"\nThe same comparison inside one set of processes (`inproc_ab.py`), repeated in {len(sets)} "
            "set(s): one model, optimizer and data loader; whole epochs of the bare step loop and of medic's "
            "own `train_epoch` alternate, the order rotating every round, so run-to-run differences cancel. "
            "Ratio: median over all rounds of bare epoch time / medic epoch time.\n\n")
    return text + table(["variant", "samples/s (median epoch)", "vs bare (per-round median)", "each set",
                         "fastest epoch samples/s", "epochs"], rows) + "\n", ratios, per_set


def best_epoch(runs: list[dict], samples: int) -> float:
    """samples/s of the fastest steady-state epoch over all runs of a variant."""
    times = [t for x in runs for t in (x["epoch_times"][1:] or x["epoch_times"]) if t > 0]
    return samples / min(times) if times else float("nan")


def profile_table(prof: dict) -> str:
    labels = [("sync", "the ranks' agreement (`StepSync`: a stop vote about every 0.25 s carrying the "
                       "finished intervals' losses), in all"),
              ("all_reduce", "… of which the blocking reduction at the end of each epoch"),
              ("record", "… of which recording the intervals (`record_windows`)"),
              ("log_batches", "… … writing the batch CSV rows"),
              ("progress", "… … the progress lines (stdout + log file)")]
    ranks = sorted(prof)
    head = ["per step, --log_interval 1"] + [f"rank {r}: µs" for r in ranks] + [f"rank {r}: % of step" for r in ranks]
    rows = [["whole step (`train_epoch` / steps)"] + [fmt(prof[r]["step_us"], 0) for r in ranks] + ["100%" for _ in ranks]]
    for key, label in labels:
        rows.append([label] + [fmt(prof[r]["parts_us"][key], 1) for r in ranks]
                    + [f"{prof[r]['parts_us'][key] / prof[r]['step_us'] * 100:.2f}%" for r in ranks])
    rows.append(["on-device bookkeeping (`sums[b]`, `counts[b]`, lr; micro-benchmark)"]
                + [fmt(prof[r]["bookkeeping_us"], 1) for r in ranks]
                + [f"{prof[r]['bookkeeping_us'] / prof[r]['step_us'] * 100:.2f}%" for r in ranks])
    for key, label in (("fused", "Adam step, medic's fused kernel (`build_optimizer`; micro-benchmark, in the step above)"),
                       ("loop", "… the same step with `torch.optim.Adam(params, lr)`'s per-parameter loop, "
                                "as a hand-written loop would have it")):
        rows.append([label] + [fmt(prof[r]["optimizer_us"][key], 0) for r in ranks]
                    + [f"{prof[r]['optimizer_us'][key] / prof[r]['step_us'] * 100:.1f}%" for r in ranks])
    ckpt = prof[0]["checkpoint_ms"]
    rows.append(["checkpoint after each epoch (rank 0, per epoch; not part of Epoch_Time_Seconds)",
                 f"{fmt(ckpt, 0)} ms/epoch"] + [""] * (len(ranks) - 1)
                + [f"{ckpt / 1e3 / prof[0]['epoch_s'] * 100:.1f}% of an epoch"] + [""] * (len(ranks) - 1))
    note = ("\nWhere the rest goes (timers around the parts the bare loop lacks, epochs after the first). "
            "A blocking all-reduce's time includes waiting for the other rank, part of which the bare "
            "loop spends inside DDP's gradient all-reduce instead.\n\n")
    return note + table(head, rows)


def run(mode: str = "quick", work: Path | None = None, progress=print, workload: Workload | None = None,
        rounds: int | None = None) -> Section:
    w, default_rounds = sizes(mode)
    w = workload or w
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-", dir=work))
    failures: list[str] = []
    try:
        if mode == "smoke":
            runs, prof, ab = smoke(w, tmp)
        else:
            runs = measure(w, rounds or default_rounds, tmp, progress, failures)
            prof, _ = profile(w, tmp)
            ab = with_retry(inproc, failures, w, INPROC_ROUNDS[mode], tmp, INPROC_SETS[mode])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report(w, runs, prof, failures, ab)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="quick", choices=("smoke", "quick", "full"))
    p.add_argument("--nproc", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--rounds", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--num_samples", type=int)
    p.add_argument("--device", choices=("cpu", "cuda"))
    args = p.parse_args(argv)
    w, _ = sizes(args.mode)
    for name in ("nproc", "threads", "epochs", "num_samples", "device"):
        if getattr(args, name) is not None:
            setattr(w, name, getattr(args, name))
    section = run(args.mode, workload=w, rounds=args.rounds)
    print(section.body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
