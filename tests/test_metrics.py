"""Per-class segmentation metrics: the empty-class rule, the HD95 cap, names, and the same
values from 1 and 2 processes (real torchrun) on one fixed checkpoint."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch

from _train_helpers import read_csv
from conftest import PY, child_env
from medic.train.metrics import CaseRows, Distances, case_dice, class_names, confusion_counts
from medic.train.selection import column_safe, validation_columns


def rows_of(pred: torch.Tensor, truth: torch.Tensor, num_classes: int, which=()) -> CaseRows:
    counts = confusion_counts(pred, truth, num_classes)
    rows = CaseRows()
    values = Distances(num_classes, which)(pred, truth, counts) if which else {}
    rows.add(list(range(len(pred))), [str(i) for i in range(len(pred))], counts, values)
    return rows


def masks(*cases: list[list[int]]) -> torch.Tensor:
    return torch.tensor(cases, dtype=torch.int64)[:, None]


def test_the_empty_class_rule_counts_a_false_positive_and_leaves_out_a_true_negative():
    # class 2 is absent from the truth of cases 1 and 2; case 1 predicts it anyway (a false
    # positive: 0), case 2 does not predict it either (left out, neither 1 nor 0)
    truth = masks([[1, 1, 2, 2]], [[1, 1, 0, 0]], [[1, 0, 0, 0]])
    pred = masks([[1, 1, 2, 0]], [[1, 1, 2, 0]], [[1, 0, 0, 0]])
    rows = rows_of(pred, truth, 3)
    dice = rows.per_case()["dice"]
    assert dice[:, 0].tolist() == [1.0, 1.0, 1.0]
    assert dice[0, 1] == pytest.approx(2 / 3) and dice[1, 1] == 0.0 and math.isnan(dice[2, 1])
    summary = rows.summary(["class_1", "class_2"])
    assert summary["Val_Dice_class_2"] == pytest.approx((2 / 3 + 0) / 2)
    assert summary["Val_Dice"] == pytest.approx((1 + 1 / 3) / 2)
    # the rules that the literature warns about give other numbers
    counted_as_one = (2 / 3 + 0 + 1) / 3          # torchmetrics-style: empty and empty = 1
    false_positive_dropped = 2 / 3                # MONAI ignore_empty: cases with empty truth dropped
    assert summary["Val_Dice_class_2"] not in (pytest.approx(counted_as_one), pytest.approx(false_positive_dropped))


def test_a_class_absent_from_every_case_is_nan_and_left_out_of_val_dice():
    truth = masks([[1, 1, 0, 0]], [[0, 1, 0, 0]])
    pred = masks([[1, 0, 0, 0]], [[0, 1, 0, 0]])
    summary = rows_of(pred, truth, 3).summary(["a", "b"])
    assert math.isnan(summary["Val_Dice_b"])
    assert summary["Val_Dice_a"] == pytest.approx((2 / 3 + 1) / 2) == summary["Val_Dice"]


def test_counts_work_on_volumes_and_dice_is_from_tp_fp_fn():
    truth = torch.zeros(2, 1, 4, 5, 6, dtype=torch.int64)
    pred = torch.zeros_like(truth)
    truth[0, 0, 1:3, 1:3, 1:3] = 1       # 8 voxels
    pred[0, 0, 1:3, 1:3, 1:2] = 1        # 4 of them
    pred[0, 0, 3, 4, 5] = 1              # and one false positive
    counts = confusion_counts(pred, truth, 2)
    assert counts[0, 0].tolist() == [4, 1, 4] and counts[1, 0].tolist() == [0, 0, 0]
    dice = case_dice(counts.numpy())
    assert dice[0, 0] == pytest.approx(8 / 13) and math.isnan(dice[1, 0])


def test_hd95_is_capped_at_the_diagonal_and_nsd_is_zero_when_a_class_is_on_one_side_only():
    pytest.importorskip("scipy", reason="MONAI's HD95 and NSD need scipy (a dependency of medic: pip install -e .)")
    truth = torch.zeros(3, 1, 20, 30, dtype=torch.int64)
    pred = torch.zeros_like(truth)
    truth[0, 0, 5:10, 5:10] = 1
    pred[0, 0, 5:10, 7:12] = 1           # both: a finite distance (2 pixels)
    pred[1, 0, 2:4, 2:4] = 1             # predicted only
    rows = rows_of(pred, truth, 2, which=("hd95", "nsd"))
    cases = rows.per_case()
    assert cases["hd95"][0, 0] == pytest.approx(2.0)
    assert cases["hd95"][1, 0] == pytest.approx(math.hypot(20, 30))
    assert math.isnan(cases["hd95"][2, 0]) and math.isnan(cases["nsd"][2, 0])
    assert cases["nsd"][1, 0] == 0.0 and 0 < cases["nsd"][0, 0] < 1
    spaced = Distances(2, ("hd95",), spacing=(2.0, 0.5))(pred, truth, confusion_counts(pred, truth, 2))
    assert spaced["hd95"][1, 0] == pytest.approx(math.hypot(40, 15))
    volume = torch.zeros(1, 1, 6, 8, 10, dtype=torch.int64)
    volume[0, 0, 2:4, 2:4, 2:4] = 1
    empty = torch.zeros_like(volume)
    capped = Distances(2, ("hd95", "nsd"), spacing=(3.0, 1.0, 1.0))(empty, volume, confusion_counts(empty, volume, 2))
    assert capped["hd95"][0, 0] == pytest.approx(math.sqrt(18 ** 2 + 8 ** 2 + 10 ** 2)) and capped["nsd"][0, 0] == 0
    same = Distances(2, ("hd95", "nsd"))(volume, volume, confusion_counts(volume, volume, 2))
    assert same["hd95"][0, 0] == 0 and same["nsd"][0, 0] == 1


def test_label_names_become_column_names():
    assert column_safe("tumour core") == "tumour_core" and column_safe("a-b/c") == "a_b_c"

    class Named(torch.utils.data.Dataset):
        label_names = ["background", "tumour core", "edema"]

    assert class_names(torch.utils.data.Subset(Named(), [0]), 3) == ["tumour_core", "edema"]
    assert class_names(torch.utils.data.TensorDataset(torch.zeros(1)), 4) == ["class_1", "class_2", "class_3"]
    assert validation_columns(["a", "b"], "dice,nsd") == ["Val_Loss", "Val_Dice", "Val_Dice_a", "Val_Dice_b",
                                                        "Val_NSD_a", "Val_NSD_b"]


def evaluate(checkpoint) -> tuple[dict, list[str], dict]:
    """One process, here: the validation of a checkpoint's model on its run's validation set."""
    from medic.config import TrainConfig
    from medic.train.outputs import checkpoint as ckpt
    from medic.train.data.sets import build_data
    from medic.train.dist import Ranks
    from medic.train.models import build_loss, build_model
    from medic.train.validation import validate
    state = ckpt.load(checkpoint)
    cfg = TrainConfig.from_dict(state["config"], strict=False)
    data = build_data(cfg, Ranks(0, 0, 1), torch.device("cpu"))
    model = build_model(cfg, in_channels=data.in_channels)
    model.load_state_dict(state["model"])
    val = validate(model, data.val_loader, build_loss(), torch.device("cpu"), cfg.num_classes,
                   class_names(data.train_ds, cfg.num_classes), tuple(cfg.val_metrics.split(",")), cfg.nsd_tolerance)
    return val.metrics, val.cases.ids, val.cases.per_case()


@pytest.mark.slow
def test_one_process_and_two_agree_on_one_checkpoint(tmp_path):
    """Per-class Dice, HD95 and NSD of one fixed checkpoint (epoch 1's): the 2-process run's own
    validation (each rank sees part of the 7 cases: the shards differ in length), and the same
    checkpoint evaluated here in 1 process."""
    pytest.importorskip("scipy", reason="MONAI's HD95 and NSD need scipy (a dependency of medic: pip install -e .)")
    run = subprocess.run([PY, "-m", "medic.train", "--nproc_per_node", "2", "--num_samples", "28", "--image_size", "32",
                          "--num_classes", "3", "--epochs", "1", "--val_fraction", "0.25",
                          "--val_metrics", "dice,hd95,nsd", "--seed", "2", "--threads", "1"], cwd=tmp_path,
                         env=child_env(GLOO_SOCKET_IFNAME="lo"), capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert json.loads(next((tmp_path / "metrics").glob("run_*.json")).read_text())["world_size"] == 2
    metrics, ids, cases = evaluate(next((tmp_path / "checkpoints").glob("*/best_model.pth")))
    names = ["class_1", "class_2"]
    assert list(metrics) == validation_columns(names, "dice,hd95,nsd") and len(ids) == 7
    header, row = read_csv(next((tmp_path / "metrics").glob("epoch_metrics_*.csv")))
    assert header[9:9 + len(metrics)] == list(metrics)  # then the timing columns
    for name, value in metrics.items():  # the CSV holds 6 decimals
        assert float(row[0][name]) == pytest.approx(value, abs=1e-6 if name != "Val_Loss" else 1e-5,
                                                    nan_ok=True), name
    header, table = read_csv(next((tmp_path / "results").glob("*/validation_epoch_1.csv")))
    assert [c["Case"] for c in table] == ids
    for metric, prefix in (("dice", "Dice_"), ("hd95", "HD95_"), ("nsd", "NSD_"), ("gt", "gt_voxels_"),
                           ("pred", "pred_voxels_")):
        for i, case in enumerate(table):
            for c, name in enumerate(names):
                want, cell = cases[metric][i, c], case[prefix + name]
                assert (cell == "") if math.isnan(want) else float(cell) == pytest.approx(want, abs=1e-6), \
                    (metric, i, c)
