"""Benchmark: DDP scaling on CPU — one process against two, with the cores split evenly.

    python benchmarks/bench_scaling.py                  # 1x1, 1x2, 2x1 (processes x threads)
    python benchmarks/bench_scaling.py --mode full      # adds 2x2 (oversubscribed), 3 rounds

Every setting runs ``medic train`` on the default model with epoch logging (samples/s from its epoch
CSV) and the bare DDP loop of ``bare_loop.py`` (no logging), the first epoch left out; the bare
loop's scaling is what the machine allows. Settings alternate round by round. Separate runs land on
a noisy machine at different moments, so ``scaling_ab.py`` then measures the same settings inside
one pair of processes, phase by phase, and its per-round ratios are the verdict. The goal is 2
processes at ≥ 1.5x the samples/s of 1 process on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Section, Workload, fmt, load_average, median, run_bare, run_medic,  # noqa: E402
                    run_same_process, table, with_retry)

GOAL = 1.5
AB_ROUNDS = {"smoke": 1, "quick": 6, "full": 10}  # rounds of scaling_ab.py


def settings(mode: str) -> tuple[list[tuple[int, int]], Workload, int]:
    """(processes, threads) pairs, the workload and the number of rounds for a mode."""
    cores = os.cpu_count() or 2
    if mode == "smoke":
        return [(1, 1)], Workload(epochs=2, num_samples=8, image_size=16), 1
    pairs = [(1, 1), (1, cores), (2, max(1, cores // 2))]
    if mode == "full":
        return pairs + [(2, cores)], Workload(epochs=4, num_samples=256), 3
    return pairs, Workload(epochs=3, num_samples=192), 2


def measure(pairs, base: Workload, rounds: int, work: Path, progress=print,
            failures: list | None = None) -> dict:
    """samples/s of medic train and of the bare loop at each setting, alternating."""
    runs: dict[str, dict[tuple[int, int], list[float]]] = {
        "medic": {p: [] for p in pairs}, "bare": {p: [] for p in pairs},
        "independent": {p: [] for p in pairs if p[0] > 1}}
    failures = [] if failures is None else failures
    for r in range(rounds):
        order = pairs[r % len(pairs):] + pairs[:r % len(pairs)]
        for nproc, threads in order:
            w = Workload(**{**base.__dict__, "nproc": nproc, "threads": threads})
            kinds = ("medic", "bare") + (("independent",) if nproc > 1 else ())
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                name = f"{kind}_p{nproc}t{threads}_{r}_{len(failures)}"
                if kind == "independent":
                    rate = with_retry(lambda: independent(w, work, name), failures)
                    runs[kind][(nproc, threads)].append(rate)
                    progress(f"  round {r + 1}/{rounds} {nproc} independent bare processes x {threads} thread(s) "
                             f"{rate:8.1f} samples/s in all")
                    continue
                res = with_retry(lambda: run_medic(w, work, name, []) if kind == "medic"
                                 else run_bare(w, work, name), failures)
                runs[kind][(nproc, threads)].append(res.samples_per_s)
                progress(f"  round {r + 1}/{rounds} {kind:<5} {w.label():<20} {res.samples_per_s:8.1f} samples/s "
                         f"(epochs {', '.join(f'{t:.2f}' for t in res.epoch_times)} s)")
    return runs


def independent(w: Workload, work: Path, name: str) -> float:
    """The ceiling for N processes on this machine: N single-process bare loops at once, each on
    the whole data set, with no communication at all; their samples/s added up."""
    single = Workload(**{**w.__dict__, "nproc": 1})
    with ThreadPoolExecutor(w.nproc) as pool:
        futures = [pool.submit(run_bare, single, work, f"{name}_{i}") for i in range(w.nproc)]
        return sum(f.result().samples_per_s for f in futures)


def same_processes(base: Workload, rounds: int, work: Path) -> dict:
    """``scaling_ab.py`` under torchrun with 2 processes: each phase's samples/s per round."""
    w = Workload(**{**base.__dict__, "nproc": 2, "threads": 1})
    return run_same_process("scaling_ab.py", w, rounds, work / "scaling_ab")


def per_round(rates: dict, a: str, b: str) -> list[float]:
    return [x / y for x, y in zip(rates[a], rates[b])]


def same_processes_text(ab: dict) -> tuple[str, list]:
    """The table of ``scaling_ab.py``'s phases and the summary row its ratios give."""
    rates = ab["samples_per_s"]
    ratio = median(per_round(rates, "2x1", "1x2"))
    rows = [[label, fmt(median(rates[ph])), ", ".join(fmt(x) for x in rates[ph])]
            for ph, label in (("1x1", "1 process x 1 thread"), ("1x2", "1 process x 2 threads"),
                              ("2x1", "2 processes x 1 thread, DDP"),
                              ("independent", "2 independent processes x 1 thread, no communication"))]
    idle = max(ab["idle_rank_cpu"]) if ab["idle_rank_cpu"] else 0.0
    text = (f"\n\nThe same settings inside one pair of processes (`scaling_ab.py`, the bare loop, {ab['rounds']} "
            f"round(s), {ab['num_samples']} samples per phase): the phases alternate, their order rotating every "
            f"round, so each round's phases see the same machine. While rank 0 runs alone, rank 1 waits in a "
            f"barrier (at most {idle:.1%} of a core).\n\n")
    text += table(["phase", "samples/s (median)", "each round"], rows)
    text += (f"\n\nPer-round ratios (median): 2 processes vs 1 process x 2 threads **{ratio:.2f}x**; vs 1 x 1 "
             f"thread {median(per_round(rates, '2x1', '1x1')):.2f}x; 1 x 2 threads vs 1 x 1 "
             f"{median(per_round(rates, '1x2', '1x1')):.2f}x; two independent processes vs 1 x 2 threads "
             f"{median(per_round(rates, 'independent', '1x2')):.2f}x (the ceiling); DDP reaches "
             f"{median(per_round(rates, '2x1', 'independent')):.0%} of that ceiling.\n")
    best1 = max(("1x1", "1x2"), key=lambda ph: median(rates[ph]))
    best_ratio = median(per_round(rates, "2x1", best1))
    row = ["DDP scaling on CPU, same processes, alternating phases (bare loop): 2x1 vs the best 1-process setting",
           f"{best_ratio:.2f}x (2x1 {fmt(median(rates['2x1']))} vs {best1} {fmt(median(rates[best1]))} samples/s); "
           f"ceiling, 2 independent processes: {median(per_round(rates, 'independent', best1)):.2f}x",
           f"≥ {GOAL}x", "met" if best_ratio >= GOAL else "not met"]
    return text, row


def scaling(med: dict) -> tuple[tuple[int, int], tuple[int, int] | None, float | None]:
    """The best 1-process setting, the best 2-process one and their ratio."""
    one = {p: v for p, v in med.items() if p[0] == 1}
    two = {p: v for p, v in med.items() if p[0] == 2}
    best1 = max(one, key=one.get)
    if not two:
        return best1, None, None
    best2 = max(two, key=two.get)
    return best1, best2, two[best2] / one[best1]


def report(runs: dict, base: Workload, failures: list[str] = (), ab: dict | None = None) -> Section:
    med = {p: median(v) for p, v in runs["medic"].items()}
    bare = {p: median(v) for p, v in runs["bare"].items()}
    best1, best2, ratio = scaling(med)
    bare1, bare2, bare_ratio = scaling(bare)
    ref = med.get((1, 1))
    rows = []
    for p, v in med.items():
        w = Workload(nproc=p[0], threads=p[1])
        rows.append([w.label(), fmt(v), f"{v / ref:.2f}x" if ref else "n/a", f"{v / med[best1]:.2f}x",
                     fmt(bare[p]), f"{v / bare[p]:.3f}", ", ".join(fmt(x) for x in runs["medic"][p])])
    body = (f"medic train (epoch logging) and the bare DDP loop (`bare_loop.py`, no logging), default model, "
            f"{base.image_size}x{base.image_size}, batch {base.batch_size} per process, {base.num_samples} "
            f"samples/epoch, {base.epochs} epochs per run (the first left out); {os.cpu_count()} cores. "
            f"The bare loop's own scaling shows what the machine allows.\n\n")
    body += table(["processes x threads", "medic samples/s", "vs 1x1", f"vs best 1-process ({best1[0]}x{best1[1]})",
                   "bare loop samples/s", "medic / bare", "each medic run"], rows)
    for failure in failures:
        body += f"\n\n**A run failed and was repeated**: {failure}"
    summary = []
    if best2 is not None:
        winner = max(med, key=med.get)
        body += (f"\n\nFastest setting: {winner[0]} process(es) x {winner[1]} thread(s). "
                 f"2 processes ({best2[0]}x{best2[1]}) vs the best single process ({best1[0]}x{best1[1]}): "
                 f"{ratio:.2f}x" + (f"; vs one process with one thread: {med[best2] / ref:.2f}x" if ref else "")
                 + f". The bare loop: {bare_ratio:.2f}x ({bare2[0]}x{bare2[1]} vs {bare1[0]}x{bare1[1]}).")
        ceiling = {p: median(v) for p, v in runs["independent"].items()}
        if best2 in ceiling:
            body += (f" The ceiling, {best2[0]} independent bare processes x {best2[1]} thread(s) at once with no "
                     f"communication: {fmt(ceiling[best2])} samples/s in all = {ceiling[best2] / bare[bare1]:.2f}x the "
                     f"best single bare process; DDP's gradient all-reduce and the ranks waiting for each other "
                     f"take the rest.")
        body += "\n"
        summary.append(["DDP scaling on CPU: 2 processes vs the best 1-process setting",
                        f"{ratio:.2f}x ({fmt(med[best2])} vs {fmt(med[best1])} samples/s; fastest: "
                        f"{winner[0]}x{winner[1]}); the bare loop on the same cores: {bare_ratio:.2f}x"
                        + (f"; {best2[0]} independent processes, no communication: "
                           f"{median(runs['independent'][best2]) / bare[bare1]:.2f}x"
                           if runs["independent"].get(best2) else ""),
                        f"≥ {GOAL}x", "met" if ratio >= GOAL else "not met"])
    if ab is not None:
        text, row = same_processes_text(ab)
        body += text
        summary.append(row)
    return Section("DDP scaling on CPU", body, summary,
                   {"runs": {kind: {f"{q[0]}x{q[1]}": v for q, v in r.items()} for kind, r in runs.items()},
                    "same_processes": ab, "load_average": load_average()})


def run(mode: str = "quick", work: Path | None = None, progress=print) -> Section:
    pairs, base, rounds = settings(mode)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scaling-", dir=work))
    failures: list[str] = []
    try:
        runs = measure(pairs, base, rounds, tmp, progress, failures)
        progress(f"  same processes: {AB_ROUNDS[mode]} rounds of 4 alternating phases")
        ab = with_retry(lambda: same_processes(base, AB_ROUNDS[mode], tmp), failures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report(runs, base, failures, ab)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="quick", choices=("smoke", "quick", "full"))
    args = p.parse_args(argv)
    print(run(args.mode).body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
