"""Graceful stops: SIGINT to ``medic train`` and SIGTERM to every process of the job, mid-epoch,
then a resume that continues exactly.

Part of the fault-injection suite (``pytest -m faults``; helpers in ``tests/_fault_helpers.py``).
Everything is real: ``medic train`` jobs with two DDP processes on CPU (gloo). The suite ends with
one line, ``faults injected: N, checks: M``, printed and written to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from _fault_helpers import (BASE, COMPARED, STEPS, Job, batch_rows, check, check_files, compare_with_reference,
                            complete_rows, continuous_best, count_rows, epoch_rows, fault_env, injected, new_project,
                            note, run_ids, sidecar, wait_until)

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("fault_summary")]


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
