"""Benchmark: what a run's heartbeat and its stop-request check cost the trainer.

    python benchmarks/bench_heartbeat.py [FOLDER]   # FOLDER: where the run's files go (a temp folder)

Rank 0 beats at most once per ``MEDIC_HEARTBEAT`` (30 s) and looks for a stop request at most once
a second (one stat); between checks each training step pays only a clock read. Printed: the cost
of one beat (an atomic rewrite without fsync), of one step between checks, and of one check.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from medic.store import control  # noqa: E402
from medic.store.paths import Project  # noqa: E402


def per_call(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    from medic.train.stopping import StopFlag
    project = Project.at(tempfile.mkdtemp(dir=sys.argv[1] if len(sys.argv) > 1 else None))
    project.metrics.mkdir()
    project.sidecar("bench").write_text("{}\n")
    beat = per_call(lambda: control.beat(project, "bench"), 2000)
    flag = StopFlag()
    flag.watch(project, "bench")
    step = per_call(flag.local, 1_000_000)

    def check():
        flag._check_at = 0.0
        flag.local()
    checked = per_call(check, 5000)
    every = control.heartbeat_interval()
    print(f"one heartbeat (control.beat):             {beat:8.1f} us  (once per {every:g} s)")
    print(f"one step between checks (StopFlag.local): {step:8.3f} us")
    print(f"one check (stat of the stop request):     {checked:8.1f} us  (at most once per {StopFlag.CHECK_S:g} s)")


if __name__ == "__main__":
    main()
