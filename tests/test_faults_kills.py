"""Hard kills: the whole job frozen then SIGKILLed at seeded random points, resumed each time,
while readers follow the run; and the readers' handling of the partial row a kill leaves.

``MEDIC_FAULT_SEED`` (default 1106) picks the kill points, ``MEDIC_FAULT_KILLS`` (default 6,
at least 4: every kind of kill point is reached) how many.

Part of the fault-injection suite (``pytest -m faults``; helpers in ``tests/_fault_helpers.py``).
Everything is real: ``medic train`` jobs with two DDP processes on CPU (gloo). The suite ends with
one line, ``faults injected: N, checks: M``, printed and written to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from _fault_helpers import (BASE, COMPARED, EPOCHS, NEWEST_SAVED, STEPS, Job, LiveReaders, batch_rows, check,
                            check_files, checkpoint_epoch, compare_with_reference, continuous_best, count_rows,
                            epoch_rows, fault_env, injected, new_project, note, run_cli, run_ids, sidecar, wait_until)
from conftest import PY

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("fault_summary")]


# -- 1. hard kills -----------------------------------------------------------------------------

KILL_KINDS = ("startup", "mid-batch", "checkpoint-write", "after-row")


def kill_plan(rng: random.Random, n: int) -> list[tuple[str, tuple[float, float] | None]]:
    """``n`` (at least 4) kill points in random order: a third during start-up, each in its own
    slice of the first 4 s (launcher, torchrun agent, workers importing, rendezvous), the rest
    shared in turn between the three kinds aimed inside training. Every kind is reached once
    with 4 kills; more kills add repetitions where the files change most (mid-batch first)."""
    if n < 4:
        raise ValueError(f"MEDIC_FAULT_KILLS={n}: at least 4 are needed to reach every kind of kill point")
    startups = max(1, n // 3)
    width = 3.7 / startups
    plan: list[tuple[str, tuple[float, float] | None]] = [
        ("startup", (0.3 + j * width, 0.3 + (j + 1) * width)) for j in range(startups)]
    plan += [(KILL_KINDS[1 + i % 3], None) for i in range(n - startups)]
    rng.shuffle(plan)
    if plan[0][0] == "startup":  # the first kill must leave a checkpoint to resume from
        j = next(i for i, (k, _) in enumerate(plan) if k != "startup")
        plan[0], plan[j] = plan[j], plan[0]
    return plan


def loads(path: Path) -> bool:
    from medic.train.outputs import checkpoint as ckpt
    from medic.errors import MedicError
    try:
        ckpt.load(path)
    except MedicError:
        return False
    return True


def temp_files(root: Path, run_id: str) -> list[Path]:
    folder = root / "checkpoints" / run_id
    return sorted(folder.glob(".*.tmp")) if folder.is_dir() else []


def aim(kind: str, job: Job, root: Path, run_id: str, rng: random.Random, first: bool,
        window: tuple[float, float] | None = None) -> str | None:
    """Wait for the kill point of ``kind`` (a start-up kill: in ``window`` seconds after the start);
    returns where it is, or None when the job ended first."""
    done, into = (0, 0) if first else checkpoint_epoch(root, run_id)
    position = done * STEPS + into
    resumes = 0 if first else len(sidecar(root, run_id).get("resumed", [])) + 1

    def current() -> bool:  # the resumed process has truncated the CSVs and rewritten the sidecar
        side = sidecar(root, run_id)
        return bool(side) and len(side.get("resumed", [])) == resumes

    if kind == "startup":
        delay = rng.uniform(*(window or (0.3, 4.0)))
        return wait_until(lambda: time.monotonic() - job.started >= delay and f"{delay:.2f} s after start",
                          120, job)
    if kind == "mid-batch":
        k = rng.randint(STEPS + 1 if first else 1, 2 * STEPS)
        target = position + k
        path = root / "metrics" / f"batch_metrics_{run_id}.csv"
        found = wait_until(lambda: current() and count_rows(path) >= target, 300, job)
        time.sleep(rng.uniform(0, 0.02))
        return found and f"after batch row {target} (epoch {(target - 1) // STEPS + 1}, batch {(target - 1) % STEPS})"
    if kind == "checkpoint-write":
        n = rng.randint(3 if first else 1, 4)
        seen: dict = {"count": 0, "last": ()}

        def nth_write():
            if not current():
                return False
            pid = sidecar(root, run_id).get("pid")
            names = tuple(p.name for p in temp_files(root, run_id) if p.name.endswith(f".{pid}.tmp"))
            if names and names != seen["last"]:
                seen["count"] += 1
            seen["last"] = names
            return seen["count"] >= n and names
        found = wait_until(nth_write, 300, job, poll=0.002)
        return found and f"during checkpoint write #{n} of the segment ({found[0]})"
    if kind == "after-row":
        m = rng.randint(2 if first else 1, 2)
        path = root / "metrics" / f"epoch_metrics_{run_id}.csv"
        found = wait_until(lambda: current() and count_rows(path) >= done + m, 300, job, poll=0.002)
        return found and f"right after epoch row {done + m}, before its checkpoint"
    raise ValueError(kind)


def test_hard_kills_at_random_points_then_resume_matches_an_uninterrupted_run(reference, tmp_path):
    from medic.store.status import effective_status
    seed = int(os.environ.get("MEDIC_FAULT_SEED", "1106"))
    rng = random.Random(seed)
    plan = kill_plan(rng, int(os.environ.get("MEDIC_FAULT_KILLS", "6")))
    root = new_project(tmp_path)
    # the dataset reads 4 ms per sample and every checkpoint write pauses half-way for 0.4 s:
    # the kill points then fall inside steps and writes, not only between them
    env = fault_env(FAULTY_READ_DELAY="0.004", MEDIC_FAULT_SLEEP_IN_CHECKPOINT="0.4")
    args = [*BASE, "--epochs", str(EPOCHS)]
    jobs: list[Job] = []
    readers = None
    watchers: list[subprocess.Popen] = []
    analyses: list[subprocess.Popen] = []
    damaged: set[Path] = set()
    damaged_at = None
    run_id = None
    kills = 0
    t0 = time.monotonic()
    note(f"hard kills: seed {seed}, plan {[kind for kind, _ in plan]}")
    try:
        for i, (kind, window) in enumerate([*plan, ("finish", None)]):
            resume = ["--resume", "latest"] if i else []
            # the last segment trains to the end at full speed: no kill is aimed at it
            job = Job(root, args + resume, env if kind != "finish" else fault_env(), name=f"segment{i}").start()
            jobs.append(job)
            if run_id is None:
                run_id = wait_until(lambda: (run_ids(root) or [None])[0], 120, job)
                readers = LiveReaders(root, run_id)
                readers.start()
            watchers.append(subprocess.Popen([PY, "-m", "medic.cli", "watch", "--run", run_id, "--interval", "0.2",
                                              "--lang", "en"], cwd=root, env=fault_env(),
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            if i in (2, 5):  # an analysis of the run while it is resumed and written
                extra = ["--batch_metrics"] if i == 5 else []
                analyses.append(subprocess.Popen([PY, "-m", "medic.cli", "analyze", "--run", run_id, "-q",
                                                  "--lang", "en", *extra], cwd=root, env=fault_env(),
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            if kind == "finish":
                check(job.wait(400) == 0, job.output())
                break
            resumed_before = len(sidecar(root, run_id).get("resumed", []))
            where = aim(kind, job, root, run_id, rng, first=i == 0, window=window)
            if where is None:  # the run finished before this kill point
                check(job.wait(60) == 0, job.output())
                note(f"  segment {i}: finished before the {kind} kill point")
                break
            job.hard_kill()
            kills += 1
            injected(f"hard kill ({kind})")
            check(not job.orphans(), f"processes left after the kill: {job.orphans()}")
            damaged = {p for p in damaged if not loads(p)}  # until a later save replaces it
            state = check_files(root, run_id, damaged)
            check(effective_status(sidecar(root, run_id)) == "interrupted", sidecar(root, run_id).get("status"))
            if kind == "checkpoint-write":
                check(any(p.name.endswith(f".{sidecar(root, run_id).get('pid')}.tmp") for p in temp_files(root, run_id)),
                      "the kill did not land inside a checkpoint write")
            if kind == "after-row":
                check(state["epochs"] == state["checkpoint"] + 1, f"not between row and checkpoint: {state}")
            if i and len(sidecar(root, run_id).get("resumed", [])) > resumed_before:
                # a resume that got as far as its files removed what killed writes left behind
                stale = [p for p in temp_files(root, run_id) if int(p.name.split(".")[-2]) not in job.tree]
                check(not stale, f"half-written checkpoints of earlier processes were not cleaned up: {stale}")
            note(f"  kill {kills} ({kind}) {where}: CSV {state['epochs']} epochs / {state['batches']} batch rows, "
                 f"checkpoint epoch {state['checkpoint']}, {state['partial_lines']} partial last line(s), "
                 f"{time.monotonic() - job.started:.1f} s into the segment")
            last = root / "checkpoints" / run_id / "last.pth"
            if damaged_at is None and last.exists() and list(last.parent.glob("model_epoch_*.pth")):
                # a torn last.pth (a file system without atomic rename, a bad disk): the resume
                # must say so and fall back to the newest intact checkpoint
                last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
                damaged.add(last)
                damaged_at = i + 1
                injected("truncated checkpoint")
                note(f"  truncated last.pth after kill {kills}; resume falls back to epoch {checkpoint_epoch(root, run_id)[0]}")
    finally:
        for job in jobs:
            if job.running():
                job.hard_kill()
        if readers is not None:
            readers.stop()
        watched = []
        for w in watchers + analyses:
            try:
                watched.append((w.returncode if w.wait(timeout=60) is not None else None, w.communicate()[1]))
            except subprocess.TimeoutExpired:
                w.kill()
                watched.append((None, "still running"))

    check(kills == len(plan), f"only {kills} kill points were reached (plan {plan})")
    reached = {kind for kind, _ in plan[:kills]}
    check(reached == set(KILL_KINDS), f"kill kinds reached: {sorted(reached)}")
    for job in jobs:
        check(not job.orphans(), f"{job.name} left processes behind")
    # the resume after the truncated last.pth said so and used an older checkpoint
    if damaged_at is not None:  # (a start-up kill may come before the resume looked)
        err = "".join(job.stderr() for job in jobs[damaged_at:])
        check("truncated or corrupt" in err and "trying an older checkpoint" in err, err[-2000:])
    # readers that followed the run all along never failed
    check(not readers.errors, f"readers failed while the run was written: {readers.errors[:5]}")
    check(readers.polls > 100 and readers.rows_seen > 0, (readers.polls, readers.rows_seen))
    for rc, err in watched:
        check(rc == 0 and "Traceback" not in err, f"medic watch/analyze exited {rc}: {err[-1500:]}")

    # the finished run: every epoch once, every (epoch, batch) once, values of an uninterrupted run
    state = check_files(root, run_id)
    rows, brows = epoch_rows(root, run_id), batch_rows(root, run_id)
    check([int(r["Epoch"]) for r in rows] == list(range(1, EPOCHS + 1)))
    check(len(brows) == EPOCHS * STEPS)
    continuous_best(rows)
    exact = compare_with_reference(rows, reference.epochs, COMPARED, "epoch row")
    bexact = compare_with_reference(brows, reference.batches, ("Epoch", "Batch", "Loss", "Learning_Rate"), "batch row")
    side = sidecar(root, run_id)
    check(side["status"] == "completed" and 0 < len(side["resumed"]) <= len(jobs) - 1, side.get("resumed"))
    check(not temp_files(root, run_id), temp_files(root, run_id))
    check({"last.pth", "best_model.pth", NEWEST_SAVED} <= set(state["loaded"]))
    note(f"  finished after {kills} kills and {len(jobs) - 1} resumes in {time.monotonic() - t0:.0f} s; "
         f"equal to the uninterrupted run as text: {exact}/{len(rows)} epoch rows, {bexact}/{len(brows)} batch rows; "
         f"readers: {readers.polls} polls, {readers.rows_seen} rows, {readers.resets} truncations seen, 0 errors; "
         f"{len(watchers)} medic watch and {len(analyses)} medic analyze processes exited 0")


def test_readers_skip_a_partial_last_row(reference, tmp_path):
    """A run killed mid-write leaves a row without its newline: every reader leaves it out."""
    from medic.live import LiveMonitor
    from medic.store.readers import read_batch_csv, read_epoch_csv
    from medic.store.tail import CsvTail
    root = new_project(tmp_path)
    (root / "metrics").mkdir()
    rid = reference.run_id
    for name in (f"epoch_metrics_{rid}.csv", f"batch_metrics_{rid}.csv", f"run_{rid}.json"):
        shutil.copy2(reference.root / "metrics" / name, root / "metrics" / name)
    epoch_csv, batch_csv = root / "metrics" / f"epoch_metrics_{rid}.csv", root / "metrics" / f"batch_metrics_{rid}.csv"
    with open(epoch_csv, "a") as f:
        f.write(f"{EPOCHS + 1},0.12")
    with open(batch_csv, "a") as f:
        f.write(f"{EPOCHS + 1},0,0.")
    injected("partial last row", 2)
    check(len(CsvTail(epoch_csv).poll()) == EPOCHS and len(CsvTail(batch_csv).poll()) == EPOCHS * STEPS)
    check(list(read_epoch_csv(epoch_csv)["Epoch"]) == list(range(1, EPOCHS + 1)))
    check(len(read_batch_csv(batch_csv)) == EPOCHS * STEPS)
    monitor = LiveMonitor(rid, root, interactive=False)
    monitor.step()
    check(monitor.feed.epochs_done == EPOCHS, monitor.feed.epochs_done)
    watch = run_cli(root, "watch", "--run", rid, "--once", "--lang", "en")
    check(watch.returncode == 0 and "Traceback" not in watch.stderr, watch.stderr)
    for extra in ([], ["--batch_metrics"]):
        proc = run_cli(root, "analyze", "--run", rid, "--lang", "en", "-q", *extra)
        check(proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:])
    report = next((root / "analysis").glob("training_report_*.txt")).read_text()
    check(f"{EPOCHS}" in report)
