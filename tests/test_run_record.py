"""MetricsLogger in a loop of one's own: the run gets a sidecar like ``medic train``'s, so its
status, options and planned epochs show in ``medic runs`` and the live monitor."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import medic
from conftest import child_env
from medic.errors import MedicError
from medic.store.logger import EPOCH_COLUMNS, MetricsLogger


def sidecar(root, run_id):
    return json.loads((root / "metrics" / f"run_{run_id}.json").read_text())


def row(epoch, loss, **extra):
    return dict(avg_loss=loss, min_batch_loss=loss - 0.1, max_batch_loss=loss + 0.1, learning_rate=0.01,
                epoch_time=0.5, **extra)


def epochs_of(path):
    with open(path, newline="") as f:
        return [int(r["Epoch"]) for r in csv.DictReader(f)]


def test_the_sidecar_goes_running_then_completed_with_options_and_plan(project):
    with MetricsLogger(project, hparams={"lr": 0.01, "model": "unet", "sizes": (1, 2)}, epochs_planned=6,
                       extra_columns=["Val_Dice"], rank=0) as log:
        side = sidecar(project, log.run_id)
        assert side["status"] == "running" and side["pid"] == os.getpid() and side["end_time"] is None
        assert side["epochs"] == 6 and side["config"] == {"lr": 0.01, "model": "unet", "sizes": [1, 2]}
        assert medic.runs(project)["status"].tolist() == ["running"]
        log.log_epoch(1, **row(1, 0.5, Val_Dice=0.7))
        log.log_epoch(2, **row(2, 0.6, Val_Dice=0.72))
        side = sidecar(project, log.run_id)
        assert (side["epochs_done"], side["best"], side["best_epoch"]) == (2, 0.5, 1)
    side = sidecar(project, log.run_id)
    assert side["status"] == "completed" and side["end_time"] and side["message"] == ""
    table = medic.runs(project)
    assert table.loc[0, "status"] == "completed" and table.loc[0, "epochs_planned"] == 6
    assert table.loc[0, "lr"] == 0.01 and table.loc[0, "model"] == "unet"
    assert medic.load_run(log.run_id, project).planned_epochs == 6


def test_an_exception_marks_the_run_failed_with_its_message(project):
    with pytest.raises(ZeroDivisionError):
        with MetricsLogger(project, rank=0) as log:
            log.log_epoch(1, **row(1, 0.5))
            1 / 0
    side = sidecar(project, log.run_id)
    assert side["status"] == "failed" and side["message"] == "ZeroDivisionError: division by zero"
    with pytest.raises(KeyboardInterrupt):
        with MetricsLogger(project, rank=0) as stopped:
            raise KeyboardInterrupt
    assert sidecar(project, stopped.run_id)["status"] == "stopped"


def test_a_process_killed_outright_shows_as_interrupted(project):
    code = ("import sys, time\nfrom medic.store.logger import MetricsLogger\n"
            "log = MetricsLogger(sys.argv[1], epochs_planned=5, rank=0)\n"
            "log.log_epoch(1, avg_loss=0.5, min_batch_loss=0.4, max_batch_loss=0.6, learning_rate=0.01, "
            "epoch_time=1.0)\nprint(log.run_id, flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(project)], stdout=subprocess.PIPE, text=True,
                            env=child_env())
    try:
        run_id = proc.stdout.readline().strip()
        assert medic.runs(project)["status"].tolist() == ["running"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert sidecar(project, run_id)["status"] == "running"  # nothing could be written
    assert medic.runs(project)["status"].tolist() == ["interrupted"]


def test_resume_continues_the_same_files_without_duplicate_rows(project):
    with MetricsLogger(project, log_batch_metrics=True, epochs_planned=4, rank=0) as log:
        for epoch, loss in ((1, 0.5), (2, 0.4), (3, 0.45)):
            log.log_batches(epoch, 0, [loss, loss], [0.01, 0.01])
            log.log_epoch(epoch, **row(epoch, loss))
    run_id = log.run_id
    # the checkpoint being resumed is of epoch 2: epoch 3's rows go, and the best is the kept one's
    with MetricsLogger(project, resume=run_id, resume_epoch=2, log_batch_metrics=True, rank=0) as again:
        assert sidecar(project, run_id)["status"] == "running"
        assert again.best == pytest.approx(0.4)
        for epoch, loss in ((3, 0.42), (4, 0.38)):
            again.log_batches(epoch, 0, [loss, loss], [0.01, 0.01])
            again.log_epoch(epoch, **row(epoch, loss))
    assert epochs_of(project / "metrics" / f"epoch_metrics_{run_id}.csv") == [1, 2, 3, 4]
    assert epochs_of(project / "metrics" / f"batch_metrics_{run_id}.csv") == [1, 1, 2, 2, 3, 3, 4, 4]
    side = sidecar(project, run_id)
    assert side["status"] == "completed" and side["epochs"] == 4 and side["epochs_done"] == 4
    assert side["resumed"][0]["from_epoch"] == 2 and side["start_time"] <= side["resumed"][0]["time"]
    with pytest.raises(MedicError, match="no run 20200101_000000 to resume"):
        MetricsLogger(project, resume="20200101_000000", rank=0)


def test_extra_columns_can_come_from_the_first_row(project):
    with MetricsLogger(project, extra_columns=None, rank=0) as log:
        log.log_epoch(1, **row(1, 0.5, val_dice=0.8, val_loss=0.3))
        log.log_epoch(2, **row(2, 0.4, val_dice=0.85, val_loss=0.25))
        with pytest.raises(MedicError, match="unknown metric"):
            log.log_epoch(3, **row(3, 0.4, other=1.0))
    header = (project / "metrics" / f"epoch_metrics_{log.run_id}.csv").read_text().splitlines()[0]
    assert header.split(",") == list(EPOCH_COLUMNS) + ["val_dice", "val_loss"]
    assert sidecar(project, log.run_id)["extra_columns"] == ["val_dice", "val_loss"]
    # continued without naming them: the file's columns
    with MetricsLogger(project, resume=log.run_id, extra_columns=None, rank=0) as again:
        assert again.extra_columns == ("val_dice", "val_loss")


def test_other_ranks_write_nothing_and_the_trainer_can_keep_its_own_sidecar(project):
    with MetricsLogger(project, rank=1) as other:
        other.log_epoch(1, **row(1, 0.5))
    assert other.run_id is None and not (project / "metrics").exists()
    with MetricsLogger(project, sidecar=False, rank=0) as log:
        log.log_epoch(1, **row(1, 0.5))
    assert not (project / "metrics" / f"run_{log.run_id}.json").exists()


def test_a_plain_loop_is_seen_by_the_live_monitor(project):
    from medic.live.feed import RunFeed
    from medic.store.paths import Project
    from medic.store.status import effective_status
    with MetricsLogger(project, epochs_planned=3, log_batch_metrics=True, run_info={"batches_per_epoch": 2},
                       rank=0) as log:
        log.log_batches(1, 0, [0.5, 0.4], [0.01, 0.01])
        log.log_epoch(1, **row(1, 0.45))
        log.log_batches(2, 0, [0.3], [0.01])
        feed = RunFeed(log.run_id, Project.at(project))
        feed.poll()
        now = feed.progress(effective_status(feed.sidecar))
        assert (now.status, now.epochs_done, now.epochs_total, now.epoch, now.batch) == ("running", 1, 3, 2, 1)
        assert now.fraction == pytest.approx(1.5 / 3) and now.eta_seconds is not None
    feed.poll()
    assert feed.progress(effective_status(feed.sidecar)).status == "completed"


def test_importing_medic_imports_neither_lightning_nor_ignite():
    code = ("import sys, medic, medic.integrations\nmedic.MetricsLogger\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'ignite', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
