"""The best model and early stopping: the monitor's direction, its EMA, top-k checkpoints,
patience; an early-stopped run (CSV, sidecar, report) that a resume continues; bad input."""

from __future__ import annotations

import json
import subprocess

import pytest

from _train_helpers import TINY, only_run_id, read_csv, train
from conftest import PY, child_env
from medic.analysis.outputs import analyze_epochs
from medic.config import TrainConfig
from medic.errors import MedicError
from medic.store.paths import resume_points
from medic.train.selection import Selector, top_k_files, top_k_plan


def test_direction_follows_the_metric_and_monitor_mode_overrides():
    def direction(**kw):
        return TrainConfig(val_fraction=0.2, **kw).validate().monitor_direction
    assert direction(monitor="Val_Dice") == direction(monitor="Val_Dice_tumour_core") == "max"
    assert direction(monitor="Val_NSD_class_1") == "max"
    assert direction(monitor="Val_Loss") == direction(monitor="Val_HD95_class_1") == direction() == "min"
    assert direction(monitor="Val_Dice", monitor_mode="min") == "min"


def test_ema_smooths_and_patience_counts_validations_without_a_big_enough_gain():
    sel = Selector("Val_Dice", "max", ema=0.9, patience=2, min_delta=0.01)
    d = [sel.update(v) for v in (0.5, 1.0, 1.0)]
    assert [x.selected for x in d] == pytest.approx([0.5, 0.55, 0.595])
    assert d[0].smoothed == d[0].selected and not any(x.stop for x in d)
    flat = Selector("Val_Loss", "min", patience=2, min_delta=0.1)
    stops = [flat.update(v).stop for v in (1.0, 0.95, 0.92, 0.5, 0.45, 0.44)]
    # 0.95 and 0.92 improve by less than min_delta: two validations without improvement
    assert stops[:2] == ["", ""] and stops[2] == "early stop: Val_Loss did not improve for 2 validations"
    assert Selector("Val_Loss", "min", ema=0.5, state={"smoothed": 2.0}).update(1.0).selected == 1.5


def test_top_k_keeps_the_best_and_drops_only_what_falls_out(tmp_path):
    for epoch, value in ((1, 0.5), (2, 0.7), (3, 0.6)):
        (tmp_path / f"epoch_{epoch}_Val_Dice_{value:.6f}.pth").write_bytes(b"x")
    enters, drop = top_k_plan(tmp_path, 3, 4, 0.65, "max")
    assert enters and [p.name for p in drop] == ["epoch_1_Val_Dice_0.500000.pth"]
    assert top_k_plan(tmp_path, 3, 4, 0.4, "max") == (False, [])
    assert top_k_plan(tmp_path, 3, 4, 0.4, "min")[0]
    assert sorted(e for _, e, _ in top_k_files(tmp_path)) == [1, 2, 3]


@pytest.mark.parametrize("options, message", [
    ({"monitor": "Val_Dice", "patience": 3}, "--patience needs validation data"),
    ({"val_metrics": "dice,iou", "val_fraction": 0.2}, "val_metrics"),
    ({"monitor_ema": 1.0}, "monitor_ema"),
    ({"save_top_k": -1}, "save_top_k"),
])
def test_bad_selection_options(options, message):
    with pytest.raises(MedicError, match=message):
        TrainConfig(**options).validate()
    TrainConfig(patience=3).validate()  # Avg_Loss needs no validation data


def test_an_unknown_monitor_is_refused_before_training_listing_the_valid_names(project):
    proc = subprocess.run([PY, "-m", "medic.train", *TINY, "--val_fraction", "0.25", "--num_classes", "3",
                           "--monitor_metric", "Val_Dice_nosuch"], cwd=project, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("medic: error: --monitor Val_Dice_nosuch: not a metric of this run; valid names: "
                                   "Avg_Loss, Val_Loss, Val_Dice, Val_Dice_class_1, Val_Dice_class_2")
    assert list(project.iterdir()) == []


@pytest.mark.slow
def test_an_early_stopped_run_and_its_resume(project):
    """Val_Loss smoothed with A = 0.5; an improvement must exceed 10 (so none does): the run stops
    at the second validation. A resume with more epochs goes on, its patience count afresh."""
    common = [*TINY, "--val_fraction", "0.25", "--monitor_metric", "Val_Loss", "--monitor_ema", "0.5",
              "--patience", "1", "--min_delta", "10", "--save_top_k", "2", "--lang", "en"]
    proc = train(project, *common, "--epochs", "5")
    run_id = only_run_id(project)
    header, rows = read_csv(project / "metrics" / f"epoch_metrics_{run_id}.csv")
    assert header[9:13] == ["Val_Loss", "Val_Dice", "Val_Dice_class_1", "Val_Loss_EMA"]  # then the timing columns
    assert [r["Epoch"] for r in rows] == ["1", "2"]
    raw = [float(r["Val_Loss"]) for r in rows]
    ema = [raw[0], 0.5 * raw[0] + 0.5 * raw[1]]
    assert [float(r["Val_Loss_EMA"]) for r in rows] == pytest.approx(ema, abs=2e-6)
    assert [float(r["Best_Loss_So_Far"]) for r in rows] == pytest.approx([ema[0], min(ema)], abs=2e-6)
    message = "early stop: Val_Loss_EMA did not improve for 1 validations"
    assert f"{message} (epoch 2)" in proc.stdout
    side = json.loads((project / "metrics" / f"run_{run_id}.json").read_text())
    assert (side["status"], side["message"], side["epochs_done"]) == ("completed", message, 2)
    ckpts = project / "checkpoints" / run_id
    kept = sorted(p.name for p in (ckpts / "top_k").iterdir())
    assert len(kept) == 2 and all(n.startswith(("epoch_1_Val_Loss_EMA_", "epoch_2_Val_Loss_EMA_")) for n in kept)
    assert all(p.parent == ckpts for p in resume_points(ckpts))
    results = project / "results" / run_id
    assert sorted(p.name for p in results.glob("validation_epoch_*.csv")) == \
        sorted({f"validation_epoch_{side['best_epoch']}.csv", "validation_epoch_2.csv"})
    assert sorted(p.name for p in (results / "strip").iterdir()) == ["epoch_1.png", "epoch_2.png"]
    _, report = analyze_epochs(project / "metrics" / f"epoch_metrics_{run_id}.csv", root=project, lang="en")
    assert f"Status: completed ({message})" in report
    assert f"Best model:\n  Val_Loss_EMA = {min(ema):.6f}" in report
    assert f"Worst validation cases (epoch {side['best_epoch']}" in report

    train(project, *common, "--epochs", "6", "--resume", "latest")
    _, rows = read_csv(project / "metrics" / f"epoch_metrics_{run_id}.csv")
    # a fresh count: epoch 3 sets the patience's reference, epoch 4 is the one without improvement
    assert [r["Epoch"] for r in rows] == ["1", "2", "3", "4"]
    side = json.loads((project / "metrics" / f"run_{run_id}.json").read_text())
    assert (side["status"], side["message"], side["epochs_done"]) == ("completed", message, 4)
