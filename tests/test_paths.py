"""Paths as the user meant them: a run records its data folder absolute, so ``--resume`` works
from any working folder; and ``medic runs`` shows each option as the run recorded it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _analysis_helpers import cli
from _train_helpers import only_run_id, read_csv, train
from conftest import child_env

from medic.store.logger import MetricsLogger


def write_png_folder(root, n=4, size=32):
    from PIL import Image
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        mask[8:20, 6 + i:18 + i] = 1
        Image.fromarray((mask * 150 + rng.integers(0, 100, (size, size))).astype(np.uint8)).save(
            root / "images" / f"case{i}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"case{i}.png")


TINY_MODEL = """
from torch import nn


def tiny(cfg):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, cfg.num_classes, 1))
"""


@pytest.mark.slow
def test_resume_from_another_folder_with_a_relative_data_folder_and_runs_shows_ints(tmp_path):
    """A relative data folder and a plug-in file, typed in one folder; the resume from another."""
    work, elsewhere, project = tmp_path / "work", tmp_path / "elsewhere", tmp_path / "project"
    write_png_folder(work / "toy")
    (work / "nets").mkdir()
    (work / "nets" / "small.py").write_text(TINY_MODEL)
    elsewhere.mkdir()
    # the plug-in uses no MONAI: loaded as for a run without plug-ins (seconds sooner per start)
    env = child_env(MEDIC_IMPORT_ALL="0")
    proc = train(work, "--data", "toy", "--model", "nets/small.py:tiny", "--epochs", "1", "--image_size", "32",
                 "--batch_size", "2", "--log_interval", "1", "--output_dir", str(project), env=env)
    assert "Data: toy" in proc.stdout  # shown as typed
    run_id = only_run_id(project)
    side = json.loads((project / "metrics" / f"run_{run_id}.json").read_text())
    assert side["config"]["data"] == str(work / "toy")
    assert side["config"]["model"] == f"{work}/nets/small.py:tiny"
    proc = train(elsewhere, "--resume", "latest", "--epochs", "2", "--output_dir", str(project), env=env)
    assert "Epoch [2/2]" in proc.stdout
    assert [r["Epoch"] for r in read_csv(project / "metrics" / f"epoch_metrics_{run_id}.csv")[1]] == ["1", "2"]

    # a run of the user's own loop records no training options: the options stay ints
    with MetricsLogger(project, "20200101_000000") as logger:
        logger.log_epoch(1, avg_loss=0.5, min_batch_loss=0.4, max_batch_loss=0.6, learning_rate=0.01, epoch_time=1.0)
    table = cli("runs", "--root", str(project), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    # the options are the last columns (the start column holds a space)
    header, own, trained = (line.split()[-6:] for line in table.stdout.splitlines()[:3])
    assert {"batch_size", "seed", "lr_step_size"} <= set(header)
    assert [trained[header.index(c)] for c in ("batch_size", "seed", "lr_step_size")] == ["2", "0", "30"]
    assert [own[header.index(c)] for c in ("batch_size", "seed", "lr_step_size")] == ["-", "-", "-"]
    assert " 2.0 " not in table.stdout and " 30.0 " not in table.stdout
    full = cli("runs", "--all", "--root", str(project), cwd=tmp_path).stdout
    assert " 2.0 " not in full and " 30.0 " not in full
    assert ",," in cli("runs", "--csv", "--root", str(project), cwd=tmp_path).stdout  # empty cells kept
