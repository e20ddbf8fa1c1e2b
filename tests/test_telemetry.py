"""Where an epoch's time goes: the telemetry columns of real 2-process runs."""

from __future__ import annotations

import os

import pytest

from _train_helpers import only_run_id, read_csv, train
from conftest import ROOT, child_env
from medic.store.logger import EPOCH_COLUMNS, TELEMETRY_COLUMNS

PLUGINS = ROOT / "tests" / "plugins"


def two_process_run(root, *args: str, env=None):
    train(root, "--nproc_per_node", "2", "--epochs", "2", "--num_samples", "32", "--image_size", "32",
          "--val_fraction", "0.25", "--log_interval", "2", *args, env=env)
    return read_csv(root / "metrics" / f"epoch_metrics_{only_run_id(root)}.csv")


@pytest.fixture(scope="module")
def ddp_rows(tmp_path_factory):
    """2 processes, the built-in data, validation on."""
    return two_process_run(tmp_path_factory.mktemp("telemetry"))


def test_the_columns_come_last_in_the_row(ddp_rows):
    header, rows = ddp_rows
    assert header == list(EPOCH_COLUMNS) + ["Val_Loss", "Val_Dice", "Val_Dice_class_1"] + list(TELEMETRY_COLUMNS)
    assert [int(r["Epoch"]) for r in rows] == [1, 2]


def test_throughput_times_training_time_is_the_epochs_samples(ddp_rows):
    _, rows = ddp_rows
    for r in rows:
        train_s = float(r["Epoch_Time_Seconds"]) - float(r["Val_Seconds"])
        # 24 training samples (32 less the 8 held out), over both ranks
        assert float(r["Samples_Per_Second"]) * train_s == pytest.approx(24, rel=0.15)
        assert 0 <= float(r["Data_Seconds"]) < train_s
        assert 0 < float(r["Val_Seconds"]) < float(r["Epoch_Time_Seconds"])


def test_peak_memory_is_the_processes_peak_so_far(ddp_rows):
    _, rows = ddp_rows
    peaks = [float(r["Peak_Memory_MB"]) for r in rows]
    assert 100 < peaks[0] < 16_000  # a torch process: hundreds of MB
    assert peaks == sorted(peaks)   # on CPU a peak so far never falls


@pytest.mark.slow
def test_data_wait_and_validation_time_of_a_slow_loader(tmp_path):
    """A dataset whose every sample takes 10 ms to load (a plug-in that uses no MONAI: loaded as
    for a run without plug-ins, seconds sooner)."""
    env = child_env(MEDIC_IMPORT_ALL="0")
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), env["PYTHONPATH"]])
    _, rows = two_process_run(tmp_path, "--dataset", "slow_data:slow_squares", env=env)
    for r in rows:
        # each rank loads 12 training samples at 10 ms each: at least 0.12 s waiting for data
        assert 0.12 <= float(r["Data_Seconds"]) < float(r["Epoch_Time_Seconds"])
        # each rank validates 4 samples, 10 ms each to load
        assert 0.04 <= float(r["Val_Seconds"]) < float(r["Epoch_Time_Seconds"])
        train_s = float(r["Epoch_Time_Seconds"]) - float(r["Val_Seconds"])
        assert float(r["Samples_Per_Second"]) * train_s == pytest.approx(24, rel=0.15)
