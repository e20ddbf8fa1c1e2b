"""Benchmark: how fast the readers start — import time of ``medic analyze``, ``medic watch`` and the
other torch-free modules, each in a fresh interpreter, and whether torch got imported.

    python benchmarks/bench_readers.py

For each module: the in-process time of ``import <module>`` (median of several fresh processes),
and the whole process's wall time against ``python -c pass``. Modules not in the package yet are
listed as absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PY, REPO, Section, child_env, fmt, median, table  # noqa: E402

READERS = ("medic.commands.analyze", "medic.commands.watch", "medic.store.catalog", "medic.live.session", "medic.analysis.compare", "medic.cli")
GOAL_S = 1.0

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import {module}
t1 = time.perf_counter()
print(json.dumps({{"seconds": t1 - t0, "torch": "torch" in sys.modules, "monai": "monai" in sys.modules,
                  "pandas": "pandas" in sys.modules, "matplotlib": "matplotlib" in sys.modules}}))
"""


def present(module: str) -> bool:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def probe(module: str) -> dict:
    """Import ``module`` in a fresh interpreter; its in-process import time, the process's wall
    time, and which heavy packages came with it."""
    t0 = time.perf_counter()
    out = subprocess.run([PY, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         env=child_env(1), cwd=REPO, timeout=120)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"import {module} failed:\n{out.stderr[-1500:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall": wall}


def baseline_wall() -> float:
    t0 = time.perf_counter()
    subprocess.run([PY, "-c", "pass"], check=True, env=child_env(1))
    return time.perf_counter() - t0


def measure(modules=READERS, repeats: int = 5) -> list[dict]:
    results = []
    for module in modules:
        if not present(module):
            results.append({"module": module, "absent": True})
            continue
        probe(module)  # warm the file cache and the .pyc files; not counted
        runs = []
        for _ in range(repeats):
            runs.append(probe(module))
            runs[-1]["baseline"] = baseline_wall()
        results.append({"module": module, "import_s": median(r["seconds"] for r in runs),
                        "wall_s": median(r["wall"] for r in runs), "pass_s": median(r["baseline"] for r in runs),
                        "torch": any(r["torch"] for r in runs), "monai": any(r["monai"] for r in runs),
                        "pandas": runs[0]["pandas"], "matplotlib": runs[0]["matplotlib"]})
    return results


def run(mode: str = "quick", work: Path | None = None) -> Section:
    results = measure(repeats={"smoke": 1, "quick": 5, "full": 9}[mode])
    rows, summary = [], []
    for r in results:
        if r.get("absent"):
            rows.append([f"`{r['module']}`", "absent", "", "", ""])
            continue
        heavy = ", ".join(k for k in ("pandas", "matplotlib") if r[k]) or "none"
        rows.append([f"`{r['module']}`", f"{fmt(r['import_s'] * 1000, 0)} ms",
                     f"{fmt(r['wall_s'] * 1000, 0)} ms (python -c pass: {fmt(r['pass_s'] * 1000, 0)} ms)",
                     "yes" if r["torch"] or r["monai"] else "no", heavy])
    measured = [r for r in results if not r.get("absent")]
    if measured:
        worst = max(measured, key=lambda r: r["import_s"])
        torch_free = not any(r["torch"] or r["monai"] for r in measured)
        summary.append(["Readers start fast: import time, no torch",
                        f"slowest `{worst['module']}` {fmt(worst['import_s'] * 1000, 0)} ms; torch imported: "
                        f"{'no' if torch_free else 'YES'}", f"< {GOAL_S:.0f} s, no torch",
                        "met" if worst["import_s"] < GOAL_S and torch_free else "not met"])
    body = table(["module", "import time (in process)", "process wall time", "imports torch/monai",
                  "heavy packages loaded at import"], rows)
    return Section("Reader start-up", body, summary, {"results": results})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    for r in measure(repeats=args.repeats):
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
