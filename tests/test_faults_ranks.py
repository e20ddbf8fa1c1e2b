"""A rank that fails: an exception on one rank, a NaN loss that stops the run, Inf losses that
``--nonfinite skip`` skips and counts. The plug-ins in ``tests/plugins/faulty.py`` inject them.

Part of the fault-injection suite (``pytest -m faults``; helpers in ``tests/_fault_helpers.py``).
Everything is real: ``medic train`` jobs with two DDP processes on CPU (gloo). The suite ends with
one line, ``faults injected: N, checks: M``, printed and written to ``test-artifacts/``.
"""

from __future__ import annotations

import math
import time

import pytest

from _fault_helpers import (BASE, STEPS, Job, batch_rows, check, check_files, complete_rows, fault_env, injected,
                            new_project, note, run_ids, sidecar)

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("fault_summary")]


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
    # the count sits right before the timing columns that end every row
    check(header[header.index("Samples_Per_Second") - 1] == "Nonfinite_Batches"
          and [r["Nonfinite_Batches"] for r in rows] == ["1", "2", "0"], rows)
    check(all(math.isfinite(float(r["Avg_Loss"])) for r in rows))
    bad = [(int(r["Epoch"]), int(r["Batch"])) for r in batch_rows(root, run_id) if r["Loss"] == "inf"]
    check(bad == [(1, 2), (2, 1), (2, 2)], bad)
    err = job.stderr()
    check(err.count("non-finite loss at epoch") == 3 and "epoch 2, batch 1: batch skipped" in err, err[-2000:])
    state = check_files(root, run_id)
    check(finite_weights(state["loaded"]["last.pth"]))
    check(sidecar(root, run_id)["status"] == "completed")
    note("Inf loss at 3 batches with --nonfinite skip: Nonfinite_Batches 1,2,0; inf rows kept in the batch CSV")
