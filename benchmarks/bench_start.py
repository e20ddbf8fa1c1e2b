"""Time to first step: from ``medic train`` to its first progress line, before and after the
start-up work (MONAI loaded for what a run uses, in a thread during the rendezvous; synthetic
samples made when first read), and the floor: the imports themselves.

    python benchmarks/bench_start.py                 # 1 and 2 processes, 3 alternating rounds
    python benchmarks/bench_start.py --rounds 1

"Before" is the source tree of ``--baseline`` (a git revision, by default the commit before the
start-up work), extracted with ``git archive`` into a temporary folder; "after" is this tree.
The two alternate, so both see the same machine. Each run trains the default workload (684
samples of 64x64, batch 4) and is ended as soon as its first progress line appears.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PY, REPO, Section, child_env, fmt, median, table  # noqa: E402

BASELINE = "078ac74"  # the last commit before the start-up work
FIRST_LINE = "Progress"


def baseline_tree(rev: str, work: Path) -> Path | None:
    """The package as it was at ``rev`` (None when git or the revision is not there)."""
    dest = work / f"baseline-{rev}"
    if dest.exists():
        return dest
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "medic"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def time_to_first_step(source: Path, nproc: int, work: Path, timeout: float = 300) -> float:
    """Seconds from starting ``medic train`` (from ``source``) to its first progress line."""
    out = Path(tempfile.mkdtemp(dir=work))
    env = child_env(threads=max(1, (os.cpu_count() or 1) // nproc))
    env["PYTHONPATH"] = str(source)
    cmd = [PY, "-m", "medic.cli", "train", "--nproc_per_node", str(nproc), "--epochs", "1", "--lang", "en",
           "--log_interval", "1", "--output_dir", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seconds, seen = float("nan"), []
    try:
        deadline = t0 + timeout
        for line in proc.stdout:
            seen.append(line)
            if FIRST_LINE in line:
                seconds = time.perf_counter() - t0
                break
            if time.perf_counter() > deadline:
                break
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole job: launcher, torchrun, workers
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(out, ignore_errors=True)
    if seconds != seconds:
        raise RuntimeError(f"no progress line from {' '.join(cmd)}:\n{''.join(seen[-20:])}")
    return seconds


def import_seconds(code: str, source: Path) -> float:
    """Wall time of a fresh interpreter running ``code`` (the imports), less an empty one's."""
    env = child_env(threads=1)
    env["PYTHONPATH"] = str(source)

    def wall(c: str) -> float:
        t = time.perf_counter()
        subprocess.run([PY, "-c", c], env=env, check=True, capture_output=True)
        return time.perf_counter() - t
    return wall(code) - wall("pass")


IMPORTS = {
    "import torch": "import torch",
    "import torch and torch._dynamo (every torch optimizer's first step imports it)": "import torch, torch._dynamo",
    "import monai (all of it, as before)": "import torch, monai",
    "import monai (held back: what a run uses)": "from medic.train.data.monai_loader import import_monai; import_monai(False)",
    "a worker's floor: torch, torch._dynamo and MONAI as a run loads it":
        "import torch._dynamo; from medic.train.data.monai_loader import import_monai; import_monai(False)",
    "the torchrun agent's own imports, before it starts the workers": "import torch.distributed.run",
}


def measure(rounds: int, nprocs: tuple[int, ...], work: Path, baseline: str = BASELINE) -> dict:
    before = baseline_tree(baseline, work)
    results: dict = {"baseline": baseline if before else None, "first_step": [], "imports": []}
    for nproc in nprocs:
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(rounds):
            if before is not None:
                times["before"].append(time_to_first_step(before, nproc, work))
            times["after"].append(time_to_first_step(REPO, nproc, work))
        results["first_step"].append({"nproc": nproc, "before": times["before"], "after": times["after"],
                                      "before_s": median(times["before"]), "after_s": median(times["after"])})
    for label, code in IMPORTS.items():
        results["imports"].append({"what": label, "seconds": median(import_seconds(code, REPO) for _ in range(rounds))})
    return results


def to_markdown(results: dict) -> str:
    rows = []
    for r in results["first_step"]:
        ratio = r["before_s"] / r["after_s"] if r["before"] else float("nan")
        rows.append([f"{r['nproc']} process{'es' if r['nproc'] > 1 else ''}", f"{fmt(r['before_s'], 2)} s",
                     f"{fmt(r['after_s'], 2)} s", f"{fmt(ratio, 2)}x",
                     ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(r["before"], r["after"]))])
    text = table(["medic train, default workload", f"before ({results['baseline']})", "after", "speed-up",
                  "rounds (before/after, s)"], rows)
    text += "\n\n" + table(["the floor: a fresh interpreter's", "seconds"],
                           [[i["what"], f"{i['seconds']:.2f}"] for i in results["imports"]])
    return text


def run(mode: str, work: Path) -> Section:
    rounds = {"smoke": 1, "quick": 2, "full": 5}[mode]
    nprocs = (1,) if mode == "smoke" else (1, 2)
    results = measure(rounds, nprocs, work)
    summary = []
    for r in results["first_step"]:
        if r["before"]:
            ratio = r["before_s"] / r["after_s"]
            summary.append([f"time to first step, {r['nproc']} process(es): `medic train` to the first progress line",
                            f"{r['after_s']:.1f} s against {r['before_s']:.1f} s before: **{ratio:.2f}x**",
                            "≥ 2x (half the time)", "met" if ratio >= 2 else "not met"])
    return Section("Time to first step", to_markdown(results), summary, results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--baseline", default=BASELINE, help="git revision of the 'before' tree")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="medic-start-"))
    try:
        print(to_markdown(measure(args.rounds, tuple(args.nproc), work, args.baseline)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
