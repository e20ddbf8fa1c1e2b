"""An epoch's outputs: the best masks come from the validation's own predictions (equal to what
``medic predict`` writes with the best checkpoint), they are written behind the training (slow
writers make no process wait past --dist_timeout), best_model.pth comes after every process's
masks and the run's end after both, and the epoch row's times add up to the wall time between
two rows."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _train_helpers import only_run_id, read_csv, train
from _volume_helpers import make_decathlon
from conftest import PY, child_env

COMMON = ["--batch_size", "2", "--lr", "0.01", "--log_interval", "1", "--val_fraction", "0.4"]


def written(run: Path) -> dict[str, int]:
    """The best masks and best_model.pth of a run, with their modification times (ns)."""
    paths = [*run.glob("results/*/best_masks/*.nii.gz"), *run.glob("checkpoints/*/best_model.pth")]
    return {p.name: p.stat().st_mtime_ns for p in paths if p.exists()}


def test_a_slow_writer_times_nothing_out_and_the_best_masks_equal_medic_predict(tmp_path):
    """Rank 0 sleeps 7 s and rank 1 8 s before writing their masks, with --dist_timeout 6, under 2
    processes: the run completes; nothing of the best epoch is written after the sidecar says
    completed, and best_model.pth is never older than a mask; best_model.pth, best_masks.json and
    the sidecar name one epoch; each process's masks equal ``medic predict --checkpoint best``."""
    import torch
    data = make_decathlon(tmp_path / "data", n=5)
    project = tmp_path / "project"
    project.mkdir()
    env = {**child_env(), "MEDIC_TEST_SLOW_WRITE": "7,8"}
    proc = subprocess.Popen([PY, "-m", "medic.cli", "train", "--nproc_per_node", "2", "--data", str(data), *COMMON,
                             "--epochs", "2", "--dist_timeout", "6", "--monitor", "Val_Dice"],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    at_completion = None
    while proc.poll() is None and at_completion is None:
        for side in (project / "metrics").glob("run_*.json") if (project / "metrics").is_dir() else []:
            try:
                if json.loads(side.read_text())["status"] == "completed":
                    at_completion = written(project)
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.01)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    run_id = only_run_id(project)
    masks = sorted((project / "results" / run_id / "best_masks").glob("*.nii.gz"))
    final = written(project)
    assert len(masks) == 2 and at_completion == final, (at_completion, final)  # both processes', all before
    assert final["best_model.pth"] >= max(final[m.name] for m in masks)
    manifest = json.loads((project / "results" / run_id / "best_masks.json").read_text())
    best = torch.load(project / "checkpoints" / run_id / "best_model.pth", weights_only=False)
    side = json.loads((project / "metrics" / f"run_{run_id}.json").read_text())
    assert manifest["epoch"] == best["epoch"] == side["best_epoch"]
    assert side["background_output_s"] >= 7  # rank 0's writer: at least its 7 s of slow writing
    assert manifest["cases"] == [m.name.removesuffix(".nii.gz") for m in masks]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for m in masks:
        (inputs / m.name).write_bytes((data / "imagesTr" / m.name).read_bytes())
    out = tmp_path / "predicted"
    proc = subprocess.run([PY, "-m", "medic.cli", "predict", "--run", run_id, "--checkpoint", "best",
                           "--input", str(inputs), "--output", str(out)], cwd=project, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for m in masks:
        ours, theirs = nib.load(str(m)), nib.load(str(out / m.name))
        assert np.array_equal(ours.affine, theirs.affine)
        assert np.asarray(ours.dataobj).tobytes() == np.asarray(theirs.dataobj).tobytes(), m.name


def test_the_epoch_columns_add_up_to_the_wall_time_between_rows(tmp_path):
    """Epoch_Time_Seconds + Output_Seconds of rows 2..4 = the time between rows 1 and 4 (seen
    by a watcher of the CSV) within 2%."""
    data = make_decathlon(tmp_path / "data", n=5)
    seen: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            paths = list((tmp_path / "metrics").glob("epoch_metrics_*.csv")) if (tmp_path / "metrics").is_dir() else []
            rows = paths[0].read_text().count("\n") - 1 if paths else 0
            now = time.perf_counter()
            while len(seen) < rows:
                seen.append(now)
            time.sleep(0.001)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        train(tmp_path, "--data", str(data), *COMMON, "--epochs", "4", "--save_interval", "1")
    finally:
        done.set()
        watcher.join()
    _, rows = read_csv(tmp_path / "metrics" / f"epoch_metrics_{only_run_id(tmp_path)}.csv")
    assert len(seen) == 4 and all(float(r["Output_Seconds"]) >= 0 for r in rows)
    columns = sum(float(r["Epoch_Time_Seconds"]) + float(r["Output_Seconds"]) for r in rows[1:])
    wall = seen[3] - seen[0]
    assert abs(columns - wall) <= 0.02 * wall, (columns, wall)


def test_a_resume_goes_on_from_the_best_model_on_disk(tmp_path):
    """A run killed after last.pth of a new best epoch but before its best_model.pth (written after
    the masks, behind the training) resumes with the best that is on disk."""
    from medic.train.outputs import checkpoint as ckpt
    from medic.train.outputs.save import best_on_disk
    state = {"format": ckpt.FORMAT, "epoch": 2, "best": 0.5, "best_epoch": 2}
    ckpt.write_checkpoint(tmp_path / "best_model.pth", ckpt.serialize(state))
    assert best_on_disk(tmp_path, 0.7, 3) == (0.5, 2)
    assert best_on_disk(tmp_path, 0.5, 2) == (0.5, 2)
    assert best_on_disk(tmp_path / "elsewhere", 0.7, 3) == (0.7, 3)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "best_model.pth").write_bytes((tmp_path / "best_model.pth").read_bytes()[:200])
    assert best_on_disk(damaged, 0.7, 3) == (0.7, 3)  # guides no better than last.pth


def test_the_writer_runs_on_one_torch_thread_and_waits_while_the_training_loop_runs(monkeypatch):
    """A writer with torch's full pool would make a second OpenMP team beside the training's, and
    one working during the training steps would take their cores (each step slower on a CPU)."""
    import torch

    from medic.train.outputs import gate as gates
    from medic.train.outputs.writer import Writer
    before, seen, gate = torch.get_num_threads(), {}, gates.Gate()
    writer, ran = Writer(gate), threading.Event()

    def job():
        seen["threads"] = torch.get_num_threads()
        ran.set()
    gate.close()  # the training loop starts
    writer.submit(job)
    assert not ran.wait(0.5)
    gate.open()  # it ends
    assert ran.wait(10)
    writer.join()
    assert seen == {"threads": 1}
    assert torch.get_num_threads() == before  # the training thread's own pool is untouched

    monkeypatch.setattr(gates, "HOLD_LIMIT_S", 0.3)  # a long training loop: the writers go on alongside
    ran.clear()
    gate.close()
    writer.submit(job)
    assert ran.wait(10)
    writer.join()
