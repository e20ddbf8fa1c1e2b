"""The fault-injection suite: what a run's files and its user see when things go wrong.

Everything is real: ``medic train`` jobs with two DDP processes on CPU (gloo), hard-killed (the
whole job, frozen then SIGKILLed through /proc) at seeded random points and resumed, stopped with
SIGINT/SIGTERM, broken by a rank that raises, by NaN/Inf losses, by bad input and by unsafe or
damaged checkpoints; readers follow a run while all that happens. The plug-ins in
``tests/plugins/faulty.py`` inject the rank failure and the non-finite losses.

``MEDIC_FAULT_SEED`` (default 1106) picks the kill points, ``MEDIC_FAULT_KILLS`` (default 10)
how many. The suite ends with one line, ``faults injected: N, checks: M``, printed and written to
``test-artifacts/faults_summary.txt`` (``faults_report.txt`` there lists every fault).
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Collection

import pytest

from _fault_helpers import (COUNTS, FAULT_KINDS, Job, LiveReaders, check, complete_rows, count_rows,
                            fault_env, injected, run_cli, snapshot, snapshot_diff, wait_until)
from conftest import PY, ROOT

pytestmark = pytest.mark.faults

STEPS = 8        # 64 samples over 2 ranks in batches of 4
EPOCHS = 16
SAVE = 2         # model_epoch_N.pth every SAVE epochs
NEWEST_SAVED = f"model_epoch_{EPOCHS // SAVE * SAVE}.pth"
BASE = ["--nproc_per_node", "2", "--num_samples", "64", "--image_size", "32", "--batch_size", "4",
        "--log_batch_metrics", "--log_interval", "1", "--save_interval", str(SAVE), "--lang", "en",
        "--dataset", "faulty:dataset", "--threads", "1"]
COMPARED = ("Epoch", "Avg_Loss", "Min_Batch_Loss", "Max_Batch_Loss", "Learning_Rate",
            "Best_Loss_So_Far", "Is_Best_Model")
REPORT: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def fault_summary(request):
    """After the module: the summary line, in the terminal and in test-artifacts/."""
    start = time.monotonic()
    yield
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(FAULT_KINDS.items()))
    line = (f"faults injected: {COUNTS['faults']}, checks: {COUNTS['checks']} "
            f"({kinds}; {time.monotonic() - start:.0f} s)")
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "faults_summary.txt").write_text(line + "\n")
    (out / "faults_report.txt").write_text("\n".join(REPORT + [line]) + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        print(line)
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():  # else the line lands in the captured output
            reporter.write_line("\n" + line)
    else:
        reporter.write_line(line)


def note(text: str) -> None:
    REPORT.append(text)


# -- a run's files ---------------------------------------------------------------------------------

def run_ids(root: Path) -> list[str]:
    return sorted(p.name[len("epoch_metrics_"):-4] for p in (root / "metrics").glob("epoch_metrics_*.csv"))


def sidecar(root: Path, run_id: str) -> dict:
    from medic.store.sidecar import read_sidecar
    return read_sidecar(root / "metrics" / f"run_{run_id}.json") or {}


def epoch_rows(root: Path, run_id: str) -> list[dict]:
    return complete_rows(root / "metrics" / f"epoch_metrics_{run_id}.csv")[1]


def batch_rows(root: Path, run_id: str) -> list[dict]:
    return complete_rows(root / "metrics" / f"batch_metrics_{run_id}.csv")[1]


def checkpoint_epoch(root: Path, run_id: str) -> tuple[int, int]:
    """(epochs done, batches into the next epoch) of the checkpoint a resume would use; (0, 0)
    when there is none."""
    from medic.train.outputs import checkpoint as ckpt
    from medic.errors import MedicError
    try:
        _, state = ckpt.newest_intact(root / "checkpoints" / run_id, warn=lambda m: None)
    except MedicError:
        return 0, 0
    partial = state.get("partial")
    return state["epoch"], partial["batch"] if partial else 0


def check_files(root: Path, run_id: str, damaged: Collection[Path] = (), nonfinite_ok: bool = False) -> dict:
    """What must hold at any moment, even right after a SIGKILL: both CSVs parse (a partial last
    line aside) with one row per epoch / per (epoch, batch) in order; medic's readers agree;
    every checkpoint on disk loads; the checkpoint is at most one epoch behind the epoch CSV."""
    from medic.train.outputs import checkpoint as ckpt
    from medic.errors import MedicError
    from medic.store.logger import BATCH_COLUMNS, EPOCH_COLUMNS
    from medic.store.readers import read_batch_csv, read_epoch_csv
    metrics = root / "metrics"
    header, rows, tail = complete_rows(metrics / f"epoch_metrics_{run_id}.csv")
    check(header[:9] == list(EPOCH_COLUMNS), f"epoch CSV header {header}")
    epochs = [int(r["Epoch"]) for r in rows]
    check(epochs == list(range(1, len(rows) + 1)), f"epoch rows {epochs}")
    for r in rows:
        check(all(math.isfinite(float(r[c])) for c in ("Avg_Loss", "Best_Loss_So_Far")) or nonfinite_ok, r)
    check(len(read_epoch_csv(metrics / f"epoch_metrics_{run_id}.csv", allow_empty=True)) == len(rows))
    bheader, brows, btail = complete_rows(metrics / f"batch_metrics_{run_id}.csv")
    pairs = [(int(r["Epoch"]), int(r["Batch"])) for r in brows]
    check(bheader == list(BATCH_COLUMNS) or not bheader, f"batch CSV header {bheader}")
    check(pairs == [(j // STEPS + 1, j % STEPS) for j in range(len(pairs))], f"batch rows out of order: {pairs[-12:]}")
    if brows:
        check(len(read_batch_csv(metrics / f"batch_metrics_{run_id}.csv")) == len(brows))
    loaded = {}
    for path in sorted((root / "checkpoints" / run_id).glob("*.pth")):
        if path in damaged:
            with pytest.raises(MedicError, match="truncated or corrupt"):
                ckpt.load(path)
            COUNTS["checks"] += 1
            continue
        loaded[path.name] = ckpt.load(path)
        COUNTS["checks"] += 1
    done, _ = checkpoint_epoch(root, run_id)
    check(done <= len(rows) <= done + 1, f"checkpoint at epoch {done}, CSV has {len(rows)} epochs")
    return {"epochs": len(rows), "batches": len(brows), "partial_lines": int(bool(tail)) + int(bool(btail)),
            "checkpoint": done, "loaded": loaded}


def compare_with_reference(rows: list[dict], ref_rows: list[dict], columns, what: str) -> int:
    """Values equal to an uninterrupted run's (to 1e-6); returns how many rows are equal as text."""
    check(len(rows) <= len(ref_rows))
    exact = 0
    for got, ref in zip(rows, ref_rows):
        for c in columns:
            if c == "Is_Best_Model":
                check(got[c] == ref[c], f"{what} {got} != {ref}")
            else:
                check(float(got[c]) == pytest.approx(float(ref[c]), rel=1e-6, abs=1e-6), f"{what} {c}: {got} != {ref}")
        exact += all(got[c] == ref[c] for c in columns)
    return exact


def continuous_best(rows: list[dict]) -> None:
    best = math.inf
    for r in rows:
        loss = float(r["Avg_Loss"])
        improved = loss < best
        best = min(best, loss)
        check(r["Is_Best_Model"] == str(improved), f"Is_Best_Model at epoch {r['Epoch']}")
        check(float(r["Best_Loss_So_Far"]) == pytest.approx(best, abs=1e-6), f"Best_Loss_So_Far at epoch {r['Epoch']}")


def new_project(tmp_path: Path, name: str = "project") -> Path:
    root = tmp_path / name
    root.mkdir()
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the configuration the kill and stop tests use."""
    root = new_project(tmp_path_factory.mktemp("reference"))
    job = Job(root, [*BASE, "--epochs", str(EPOCHS)], fault_env(), name="reference").start()
    t = time.monotonic()
    assert job.wait(400) == 0, job.output()
    note(f"reference run: {EPOCHS} epochs x {STEPS} steps, 2 processes, {time.monotonic() - t:.1f} s")
    (run_id,) = run_ids(root)
    return SimpleNamespace(root=root, run_id=run_id, epochs=epoch_rows(root, run_id),
                           batches=batch_rows(root, run_id))


# -- 1. hard kills -----------------------------------------------------------------------------

KILL_KINDS = ("startup", "mid-batch", "checkpoint-write", "after-row")


def kill_plan(rng: random.Random, n: int) -> list[str]:
    """``n`` kill points in random order: 40% during start-up (they cost no training), the rest
    shared between the three kinds aimed inside training."""
    startups = n * 2 // 5
    plan = ["startup"] * startups + [KILL_KINDS[1 + i % 3] for i in range(n - startups)]
    rng.shuffle(plan)
    if plan[0] == "startup":  # the first kill must leave a checkpoint to resume from
        j = next(i for i, k in enumerate(plan) if k != "startup")
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


def aim(kind: str, job: Job, root: Path, run_id: str, rng: random.Random, first: bool) -> str | None:
    """Wait for the kill point of ``kind``; returns where it is, or None when the job ended first."""
    done, into = (0, 0) if first else checkpoint_epoch(root, run_id)
    position = done * STEPS + into
    resumes = 0 if first else len(sidecar(root, run_id).get("resumed", [])) + 1

    def current() -> bool:  # the resumed process has truncated the CSVs and rewritten the sidecar
        side = sidecar(root, run_id)
        return bool(side) and len(side.get("resumed", [])) == resumes

    if kind == "startup":
        delay = rng.uniform(0.3, 4.0)
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
    plan = kill_plan(rng, int(os.environ.get("MEDIC_FAULT_KILLS", "10")))
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
    note(f"hard kills: seed {seed}, plan {plan}")
    try:
        for i, kind in enumerate([*plan, "finish"]):
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
            where = aim(kind, job, root, run_id, rng, first=i == 0)
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

    check(kills >= 10, f"only {kills} kill points were reached (plan {plan})")
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


# -- 2. graceful stop --------------------------------------------------------------------------

def test_sigint_and_sigterm_stop_gracefully_and_resume_continues_exactly(reference, tmp_path):
    root = new_project(tmp_path)
    epochs = 5
    # steps slower than StepSync.EVERY_S (4 reads x 75 ms), so the ranks vote at every step: rows
    # then show up at most a step late and the stop comes at most a step or two after the signal.
    # (With faster steps both stretch to about EVERY_S's worth of steps, by design.)
    env = fault_env(FAULTY_READ_DELAY="0.075")
    args = [*BASE, "--epochs", str(epochs)]
    stops = []
    for i, (sig, at_epoch, how) in enumerate([(signal.SIGINT, 2, "Ctrl-C to medic train"),
                                              (signal.SIGTERM, 4, "SIGTERM to every process of the job")]):
        job = Job(root, args + (["--resume", "latest"] if i else []), env, name=f"stop{i}").start()
        run_id = wait_until(lambda: (run_ids(root) or [None])[0], 120, job)
        path = root / "metrics" / f"batch_metrics_{run_id}.csv"

        def reached():
            side = sidecar(root, run_id)
            return len(side.get("resumed", [])) == i and \
                any(r["Epoch"] == str(at_epoch) for r in complete_rows(path)[1])
        wait_until(reached, 300, job)
        at_signal = count_rows(path)
        t = time.monotonic()
        if sig == signal.SIGINT:
            os.kill(job.pid, sig)
        else:
            job.signal_all(sig)
        injected(f"graceful stop ({signal.Signals(sig).name})")
        rc = job.wait(120)
        seconds = time.monotonic() - t
        check(rc == 130, f"exit code {rc}\n{job.output()}")
        check(seconds < 30, f"took {seconds:.1f} s to stop")
        check(not job.orphans())
        out = job.stdout()
        check(f"Stop requested during epoch {at_epoch}" in out and f"medic train --resume {run_id}" in out, out[-1500:])
        if sig == signal.SIGINT:
            check("Traceback" not in job.stderr(), job.stderr()[-3000:])
        side = sidecar(root, run_id)
        check(side["status"] == "stopped", side)
        from medic.train.outputs import checkpoint as ckpt
        state = ckpt.load(root / "checkpoints" / run_id / "last.pth")
        partial = state.get("partial")
        check(partial is not None and partial["epoch"] == at_epoch and state["epoch"] == at_epoch - 1, state.keys())
        stopped_at = (at_epoch - 1) * STEPS + partial["batch"]
        # agreed at the next step boundary: a step or two after the last row seen (on a loaded
        # machine the signal may take a few steps to travel through the launcher)
        check(0 <= stopped_at - at_signal <= 4, f"stopped at row {stopped_at}, signal after row {at_signal}")
        check(count_rows(path) == stopped_at and len(epoch_rows(root, run_id)) == at_epoch - 1)
        check_files(root, run_id)
        stops.append(f"{how} in epoch {at_epoch} after batch row {at_signal}: stopped at batch "
                     f"{partial['batch']} of epoch {at_epoch}, exit 130 after {seconds:.1f} s")
    job = Job(root, args + ["--resume", "latest"], env, name="stop-resume").start()
    check(job.wait(300) == 0, job.output())
    rows, brows = epoch_rows(root, run_id), batch_rows(root, run_id)
    check([int(r["Epoch"]) for r in rows] == list(range(1, epochs + 1)))
    check([(int(r["Epoch"]), int(r["Batch"])) for r in brows] ==
          [(e, b) for e in range(1, epochs + 1) for b in range(STEPS)])
    continuous_best(rows)
    exact = compare_with_reference(rows, reference.epochs, COMPARED, "epoch row")
    bexact = compare_with_reference(brows, reference.batches, ("Epoch", "Batch", "Loss", "Learning_Rate"), "batch row")
    check(sidecar(root, run_id)["status"] == "completed")
    for s in stops:
        note(f"graceful stop: {s}")
    note(f"  after two mid-epoch stops and resumes: equal to the uninterrupted run as text: "
         f"{exact}/{len(rows)} epoch rows, {bexact}/{len(brows)} batch rows")


# -- 3. a rank fails ---------------------------------------------------------------------------

def test_an_exception_on_one_rank_ends_the_whole_job_quickly(tmp_path):
    root = new_project(tmp_path)
    marker = tmp_path / "failed_at"
    # rank 1 reads 1 sample at start-up and 32 per epoch: it raises in epoch 3, batch 2
    env = fault_env(FAULTY_FAIL_AFTER=1 + 2 * 32 + 10, FAULTY_FAIL_RANKS=1, FAULTY_MARKER=marker)
    job = Job(root, [*BASE, "--epochs", "5"], env, name="rank-fails").start()
    rc = job.wait(300)
    ended = time.time()
    injected("exception on rank 1")
    check(rc != 0, job.output())
    failed_at = float(marker.read_text().split()[0])
    check(ended - failed_at < 60, f"the job took {ended - failed_at:.1f} s to end")
    err = job.stderr()
    check("Traceback" in err and "RuntimeError: injected data failure on rank 1" in err, err[-3000:])
    check(not job.orphans())
    (run_id,) = run_ids(root)
    side = sidecar(root, run_id)
    check(side["status"] == "failed" and "injected data failure on rank 1" in side["message"], side.get("message"))
    state = check_files(root, run_id)
    check(state["epochs"] == 2 and state["checkpoint"] == 2, state)
    check({"last.pth", "best_model.pth"} <= set(state["loaded"]))
    note(f"rank 1 raised in epoch 3: the job exited {rc} {ended - failed_at:.1f} s later; sidecar: {side['message']}")


# -- 4. non-finite loss ------------------------------------------------------------------------

def finite_weights(state: dict) -> bool:
    import torch
    return all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    root = new_project(tmp_path)
    # rank 1 only: the global batch loss is NaN on both, and both must stop together
    env = fault_env(FAULTY_NONFINITE="nan", FAULTY_NONFINITE_STEPS=STEPS + 4, FAULTY_NONFINITE_RANKS=1)
    job = Job(root, [*BASE, "--model", "faulty:model", "--epochs", "4"], env, name="nan").start()
    rc = job.wait(300)
    injected("NaN loss")
    check(rc == 3, f"exit code {rc}\n{job.output()}")
    err = job.stderr()
    check("Non-finite loss (nan) at epoch 2, batch 3" in err and "last good checkpoint (epoch 1)" in err, err[-2000:])
    check("Traceback" not in err, err[-3000:])
    check(not job.orphans())
    (run_id,) = run_ids(root)
    side = sidecar(root, run_id)
    check(side["status"] == "failed" and side["message"] == "non-finite loss (nan) at epoch 2, batch 3", side)
    state = check_files(root, run_id, nonfinite_ok=True)
    brows = batch_rows(root, run_id)
    check(brows[-1]["Loss"] == "nan" and (brows[-1]["Epoch"], brows[-1]["Batch"]) == ("2", "3"), brows[-1])
    check(state["epochs"] == 1 and state["checkpoint"] == 1)
    check(finite_weights(state["loaded"]["last.pth"]) and finite_weights(state["loaded"]["best_model.pth"]))
    note("NaN loss at epoch 2, batch 3 (rank 1): exit 3, " + err.strip().splitlines()[-1])


def test_nonfinite_skip_skips_and_counts_inf_batches(tmp_path):
    root = new_project(tmp_path)
    # rank 1's steps 3, 10, 11: epoch 1 batch 2, epoch 2 batches 1 and 2
    env = fault_env(FAULTY_NONFINITE="inf", FAULTY_NONFINITE_STEPS="3,10,11", FAULTY_NONFINITE_RANKS=1)
    job = Job(root, [*BASE, "--model", "faulty:model", "--epochs", "3", "--nonfinite", "skip"], env,
              name="inf-skip").start()
    rc = job.wait(300)
    injected("Inf loss", 3)
    check(rc == 0, job.output())
    (run_id,) = run_ids(root)
    header, rows, _ = complete_rows(root / "metrics" / f"epoch_metrics_{run_id}.csv")
    check(header[-4] == "Nonfinite_Batches" and [r["Nonfinite_Batches"] for r in rows] == ["1", "2", "0"], rows)
    check(all(math.isfinite(float(r["Avg_Loss"])) for r in rows))
    bad = [(int(r["Epoch"]), int(r["Batch"])) for r in batch_rows(root, run_id) if r["Loss"] == "inf"]
    check(bad == [(1, 2), (2, 1), (2, 2)], bad)
    err = job.stderr()
    check(err.count("non-finite loss at epoch") == 3 and "epoch 2, batch 1: batch skipped" in err, err[-2000:])
    state = check_files(root, run_id)
    check(finite_weights(state["loaded"]["last.pth"]))
    check(sidecar(root, run_id)["status"] == "completed")
    note("Inf loss at 3 batches with --nonfinite skip: Nonfinite_Batches 1,2,0; inf rows kept in the batch CSV")


# -- 5. bad input, 6. unsafe and damaged checkpoints ---------------------------------------------

def write_png(path: Path, value: int = 0) -> None:
    import numpy as np
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(path)


class Evil:
    """Unpickling this runs a shell command: what a checkpoint from a stranger might hold."""

    def __reduce__(self):
        return os.system, ('touch "$EVIL_MARKER"',)


@pytest.fixture(scope="module")
def bad_inputs(reference, tmp_path_factory):
    """A project holding a finished run, and every kind of bad input next to it."""
    import torch
    from medic.train.outputs import checkpoint as ckpt
    base = tmp_path_factory.mktemp("bad")
    root = base / "project"
    shutil.copytree(reference.root, root, copy_function=os.link)  # hard links: cheap and exact
    for name in ("nomask/images/a.png", "nomask/images/b.png", "nomask/masks/a.png",
                 "mismatch/images/a.png", "mismatch/masks/b.png", "unreadable/masks/a.png"):
        write_png(root / "data" / name)
    (root / "data" / "unreadable" / "images").mkdir(parents=True)
    (root / "data" / "unreadable" / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    (root / "a_file").write_text("a regular file, where a folder is needed\n")
    (root / "empty").mkdir()
    ref_ckpt = root / "checkpoints" / reference.run_id / "last.pth"
    state = ckpt.load(ref_ckpt)
    state["config"]["num_classes"] = 3  # the weights are those of a 2-class model
    torch.save(state, root / "foreign.pth")
    (root / "notes.pth").write_text("not a checkpoint\n")
    (root / "truncated.pth").write_bytes(ref_ckpt.read_bytes()[:100_000])
    torch.save({"format": ckpt.FORMAT, "model": Evil()}, root / "evil.pth")
    return SimpleNamespace(root=root, base=base, run_id=reference.run_id)


def bad_input_cases(run_id: str) -> list[tuple[str, list[str], str]]:
    more = ["--epochs", str(EPOCHS + 4)]
    return [
        ("missing data folder", ["--data", "data/nope"], "data folder data/nope does not exist"),
        ("images without masks", ["--data", "data/nomask"], "have no mask of the same name"),
        ("mismatched names", ["--data", "data/mismatch"], "have no mask of the same name in .*, e.g. a.png"),
        ("unreadable image", ["--data", "data/unreadable"], "cannot read"),
        ("plug-in module not found", ["--model", "no_such_module:build"], "cannot import module 'no_such_module'"),
        ("plug-in fails to import", ["--model", "faulty_import:model", "--dataset", "faulty:dataset"],
         "importing 'faulty_import' failed"),
        ("zero epochs", ["--epochs", "0"], "option epochs must be > 0"),
        ("negative epochs", ["--epochs", "-3"], "option epochs must be > 0"),
        ("zero batch size", ["--batch_size", "0"], "option batch_size must be > 0"),
        ("negative learning rate", ["--lr", "-0.001"], "option lr must be > 0"),
        ("zero learning rate", ["--lr", "0"], "option lr must be > 0"),
        ("zero log interval", ["--log_interval", "0"], "option log_interval must be > 0"),
        ("negative save interval", ["--save_interval", "-1"], "option save_interval must be > 0"),
        ("misspelt flag", ["--epochz", "3"], "did you mean --epochs"),
        ("unwritable output folder", ["--output_dir", "a_file/out"], "is not writable"),
        ("resume of an unknown run", ["--resume", "20000101_000000"], "run 20000101_000000 does not exist"),
        ("resume latest without runs", ["--resume", "latest", "--output_dir", "empty"], "no run with checkpoints"),
        ("resume of a missing file", ["--resume", "missing.pth"], "missing.pth does not exist"),
        ("resume with another model", ["--resume", run_id, *more, "--model", "faulty:model"], "cannot resume it with model="),
        ("resume with other classes", ["--resume", run_id, *more, "--num_classes", "3"], "cannot resume it with num_classes=3"),
        ("checkpoint of another model", ["--resume", "foreign.pth", *more], "does not fit this model"),
        ("not a checkpoint", ["--resume", "notes.pth"], "notes.pth"),
        ("truncated checkpoint", ["--resume", "truncated.pth"], "is truncated or corrupt"),
        ("checkpoint that runs code", ["--resume", "evil.pth"], "could run code; refusing to load it"),
    ]


@pytest.mark.parametrize("mode", ["single process", "2 processes"])
def test_bad_input_gets_one_clear_line_and_changes_nothing(bad_inputs, mode):
    root = bad_inputs.root
    marker = bad_inputs.base / f"evil ran ({mode})"
    env = fault_env(EVIL_MARKER=marker)
    ddp = ["--nproc_per_node", "2"] if mode == "2 processes" else []
    before = snapshot(root)
    cases = bad_input_cases(bad_inputs.run_id)

    def attempt(case):
        name, args, expected = case
        t = time.monotonic()
        proc = run_cli(root, "train", *args, "--num_samples", "16", "--image_size", "32", *ddp, "--lang", "en",
                       env=env, timeout=300)
        return name, proc, expected, time.monotonic() - t

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(attempt, cases))
    timings, problems = [], []
    for name, proc, expected, seconds in results:
        injected("bad input")
        errors = [line for line in proc.stderr.splitlines() if line.startswith("medic: error:")]
        for ok, what in [(proc.returncode == 2, f"exit code {proc.returncode}"),
                         ("Traceback" not in proc.stderr, "a traceback"),
                         (len(errors) == 1 and re.search(expected, errors[0]), f"not one error line matching {expected!r}")]:
            COUNTS["checks"] += 1
            if not ok:
                problems.append(f"{name}: {what}; stderr:\n{proc.stderr[-1500:]}")
        timings.append(f"{name} {seconds:.1f} s")
    check(not problems, "\n\n".join(problems))
    changes = snapshot_diff(before, snapshot(root))
    check(not changes, f"bad input changed the project: {changes}")
    check(not marker.exists(), "the crafted checkpoint ran its code")
    note(f"bad input ({mode}): {len(cases)} cases, exit 2 with one line each, nothing changed; " + ", ".join(timings))


def test_checkpoint_safety_in_process(bad_inputs, tmp_path):
    """weights_only refuses code; truncated and foreign files are named as such; a run whose
    newest checkpoint is damaged resumes from the newest intact one."""
    from medic.train.outputs import checkpoint as ckpt
    from medic.errors import MedicError
    root = bad_inputs.root
    marker = tmp_path / "evil ran"
    os.environ["EVIL_MARKER"] = str(marker)
    try:
        with pytest.raises(MedicError, match="could run code"):
            ckpt.load(root / "evil.pth")
    finally:
        del os.environ["EVIL_MARKER"]
    check(not marker.exists())
    # the same file does run code when loaded without weights_only: the test above can fail
    unsafe = subprocess.run([PY, "-c", f"import torch; torch.load({str(root / 'evil.pth')!r}, weights_only=False)"],
                            env={**os.environ, "EVIL_MARKER": str(marker)}, capture_output=True, timeout=120)
    check(marker.exists(), unsafe.stderr[-1000:])
    for name, damage, expected in [("empty", b"", "truncated or corrupt"),
                                   ("half", None, "truncated or corrupt"),
                                   ("garbage", os.urandom(4096), "cannot load checkpoint|truncated or corrupt")]:
        src = root / "checkpoints" / bad_inputs.run_id / "last.pth"
        folder = tmp_path / name
        shutil.copytree(src.parent, folder, copy_function=shutil.copy2)
        data = src.read_bytes()
        (folder / "last.pth").write_bytes(damage if damage is not None else data[: len(data) // 2])
        injected("damaged checkpoint")
        with pytest.raises(MedicError, match=expected):
            ckpt.load(folder / "last.pth")
        warnings = []
        path, state = ckpt.newest_intact(folder, warn=warnings.append)
        check(path.name == NEWEST_SAVED and state["epoch"] == EPOCHS // SAVE * SAVE, path)
        check(len(warnings) == 1 and "trying an older checkpoint" in warnings[0], warnings)
    evil_run = tmp_path / "evil-run"
    shutil.copytree(root / "checkpoints" / bad_inputs.run_id, evil_run, copy_function=shutil.copy2)
    shutil.copy2(root / "evil.pth", evil_run / "last.pth")
    injected("checkpoint that runs code")
    path, _ = ckpt.newest_intact(evil_run, warn=lambda m: check("could run code" in m, m))
    check(path.name == NEWEST_SAVED)


# -- 7. concurrency ----------------------------------------------------------------------------

RESERVE = """
import os, sys, time
from medic.store.paths import Project, reserve_run_id
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
print(reserve_run_id(Project.at(sys.argv[1]), now=float(sys.argv[3])))
"""


def test_runs_started_in_the_same_second_get_distinct_ids_and_files(tmp_path):
    # six processes claim an id for the same second at the same moment
    root = new_project(tmp_path, "race")
    go = tmp_path / "go"
    stamp = time.time()
    procs = [subprocess.Popen([PY, "-c", RESERVE, str(root), str(go), str(stamp)], env=fault_env(),
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    time.sleep(1.0)
    go.touch()
    ids = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    base = time.strftime("%Y%m%d_%H%M%S", time.localtime(stamp))
    check(ids == sorted([base] + [f"{base}_{n}" for n in range(2, 7)]), ids)
    injected("same-second id race (6 processes)")
    # two real trainings started together from two shells, in one project
    root = new_project(tmp_path, "two")
    env = fault_env()
    cmd = f"{PY} -m medic.cli train --epochs 2 --num_samples 16 --image_size 32 --log_batch_metrics " \
          "--model faulty:model --dataset faulty:dataset --lang en"
    shells = [subprocess.Popen(["bash", "-c", cmd], cwd=root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [s.communicate(timeout=300) for s in shells]
    injected("two concurrent runs")
    for s, (out, err) in zip(shells, outs):
        check(s.returncode == 0, err[-2000:])
    ids = run_ids(root)
    check(len(ids) == 2, ids)
    for run_id in ids:
        check([r["Epoch"] for r in epoch_rows(root, run_id)] == ["1", "2"])
        check(len(batch_rows(root, run_id)) == 2 * 4)
        check(sidecar(root, run_id)["run_id"] == run_id and sidecar(root, run_id)["status"] == "completed")
        check((root / "checkpoints" / run_id / "last.pth").exists() and (root / "log" / f"training_{run_id}.log").exists())
    same = ids[0][:15] == ids[1][:15]
    for run_id in ids:
        check(sum(f"epoch_metrics_{run_id}.csv" in out for out, _ in outs) == 1, "each run printed its own file")
    note(f"same-second ids: 6 racing processes got {ids[0][:15]}…_6 distinct; two trainings from two shells: "
         f"{ids} ({'the same second' if same else 'different seconds this time'})")


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
