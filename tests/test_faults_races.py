"""Concurrency: run ids claimed in the same second, two trainings started together in one project.

Part of the fault-injection suite (``pytest -m faults``; helpers in ``tests/_fault_helpers.py``).
Everything is real: ``medic train`` jobs with two DDP processes on CPU (gloo). The suite ends with
one line, ``faults injected: N, checks: M``, printed and written to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from _fault_helpers import batch_rows, check, epoch_rows, fault_env, injected, new_project, note, run_ids, sidecar
from conftest import PY

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("fault_summary")]


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
