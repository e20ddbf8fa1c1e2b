"""Run every benchmark and write one Markdown report: ``benchmarks/out/results.md`` (and the raw
numbers in ``results.json``), printed as well.

    python benchmarks/run_all.py            # quick mode: a few minutes
    python benchmarks/run_all.py --full     # the large sizes: 1M logger rows, more rounds, 10M-row analysis,
                                            # 10,000 runs for medic runs
    python benchmarks/run_all.py --smoke    # tiny sizes, to check the benchmarks themselves run
    python benchmarks/run_all.py --only logger readers

The benchmarks run one after another, never in parallel (they would measure each other). Numbers
from a busy machine are noisy: the report records the load average before and after.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, Section, load_average, machine, table  # noqa: E402

ORDER = ("logger", "readers", "analysis", "bigcsv", "catalog", "overhead", "scaling", "lightning", "start",
         "val3d")


def analysis_section(mode: str, work: Path) -> Section:
    """The analysis benchmark (``bench_analysis.py``), when it is there."""
    if not (BENCH / "bench_analysis.py").exists():
        return Section("Analysis and watch poll", "_bench_analysis.py is not present: skipped._", [], {})
    import bench_analysis
    kwargs = {}
    params = inspect.signature(bench_analysis.run).parameters
    if mode == "smoke":
        # a handful of rows: checks the wiring, not the speed
        kwargs = {k: v for k, v in {"sizes": [2000], "poll_rows": 5000, "repeats": 1}.items() if k in params}
    if "work" in params:
        kwargs["work"] = str(work)
    rows = bench_analysis.run(quick=mode != "full", **kwargs)
    if hasattr(bench_analysis, "to_markdown"):
        body = bench_analysis.to_markdown(rows)
    else:
        keys = sorted({k for r in rows for k in r})
        body = table(keys, [[r.get(k, "") for k in keys] for r in rows])
    summary = []
    for r in rows:
        if "medic_s" in r and "rows" in r:
            summary.append([f"`medic analyze --batch_metrics`, {r['rows']:,} rows", f"{r['medic_s']:.2f} s", "", ""])
        elif "poll_s" in r:
            summary.append([f"watch poll, 1 new row in a {r['rows']:,}-row file",
                            f"{r['poll_s'] * 1e6:.0f} µs ({r['speedup']:,.0f}x faster than re-reading)", "", ""])
    return Section("Analysis and watch poll", body, summary, {"rows": rows})


def run_section(name: str, mode: str, work: Path) -> Section:
    if name == "analysis":
        return analysis_section(mode, work)
    module = __import__(f"bench_{name}")
    return module.run(mode, work)


def render(sections: list[Section], mode: str, started: str, seconds: float, loads: tuple[str, str],
           command: str) -> str:
    info = machine()
    lines = [f"# medic benchmarks ({mode} mode)", "",
             f"Command: `{command}` — {started}, took {seconds / 60:.1f} min.", "",
             f"Machine: {info.get('cpus')} CPU cores ({info.get('cpu', 'unknown CPU')}), GPU: "
             f"{info.get('cuda', 'n/a')}; Python {info.get('python')}, torch {info.get('torch', 'n/a')}, "
             f"{info.get('platform')}. Load average (1/5/15 min) before: {loads[0]}; after: {loads[1]}.", ""]
    summary = [row for s in sections for row in s.summary]
    if summary:
        lines += ["## Summary", "", table(["claim", "measured", "goal", "verdict"], summary), ""]
    for s in sections:
        lines += [f"## {s.title}", "", s.body.rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="large sizes (tens of minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes: checks that everything runs")
    p.add_argument("--only", nargs="+", choices=ORDER, help="run only these benchmarks")
    p.add_argument("--out", default=str(BENCH / "out"), help="folder for results.md and results.json")
    args = p.parse_args(argv)
    mode = "full" if args.full else "smoke" if args.smoke else "quick"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/run_all.py" + {"full": " --full", "smoke": " --smoke", "quick": ""}[mode] \
        + (f" --only {' '.join(args.only)}" if args.only else "")
    started, t0, load_before = time.strftime("%Y-%m-%d %H:%M"), time.perf_counter(), load_average()
    work = Path(tempfile.mkdtemp(prefix="medic-bench-"))
    sections, failed = [], []
    try:
        for name in args.only or ORDER:
            print(f"== {name} ({mode})", flush=True)
            t = time.perf_counter()
            try:
                section = run_section(name, mode, work)
            except Exception as err:  # one broken benchmark must not hide the others' numbers
                traceback.print_exc()
                failed.append(name)
                section = Section(name, f"**failed**: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                                  [], {})
            sections.append(section)
            print(f"   done in {time.perf_counter() - t:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = render(sections, mode, started, time.perf_counter() - t0, (load_before, load_average()), command)
    (out / "results.md").write_text(text + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({s.title: s.data for s in sections}, indent=1, default=str),
                                      encoding="utf-8")
    print(text)
    print(f"written: {out / 'results.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
