"""Where people look at per-class values: the report (final/best per class, worst cases, the
early-stop message), the analysis and comparison figures, ``medic watch``'s line, the live
monitor's strip and per-class text. Written runs, no training."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _analysis_helpers import write_run

from medic.analysis.compare import compare_runs
from medic.analysis.outputs import analyze_epochs
from medic.live.strip import newest_strip, per_class_text
from medic.store.columns import compact_cells, split_per_class

PER_CLASS = {"Val_Loss": lambda e: 1 / e, "Val_Dice": lambda e: 0.1 * e,
             "Val_Dice_liver": lambda e: 0.15 * e, "Val_Dice_tumour_core": lambda e: 0.05 * e,
             "Val_HD95_liver": lambda e: 30 / e, "Val_HD95_tumour_core": lambda e: 40 / e}
CASES = """Case,Dice_liver,Dice_tumour_core,gt_voxels_liver,pred_voxels_liver,gt_voxels_tumour_core,pred_voxels_tumour_core
a.png,0.900000,0.800000,100,98,20,22
b.png,0.100000,,100,30,0,0
c.png,0.950000,0.000000,100,101,0,7
d.png,0.700000,0.600000,90,80,10,9
e.png,0.800000,0.850000,95,99,12,12
f.png,0.850000,0.750000,95,99,12,12
"""


@pytest.fixture
def run(project):
    write_run(project, "20250101_000001", epochs=4, extra=PER_CLASS, monitor="Val_Dice")
    results = project / "results" / "20250101_000001"
    (results / "strip").mkdir(parents=True)
    (results / "validation_epoch_4.csv").write_text(CASES)
    for e in (2, 10, 3):
        (results / "strip" / f"epoch_{e}.png").write_bytes(b"png %d" % e)
    side = project / "metrics" / "run_20250101_000001.json"
    record = json.loads(side.read_text())
    record["message"] = "early stop: Val_Dice did not improve for 2 validations"
    side.write_text(json.dumps(record))
    return project


def test_the_report_lists_each_class_its_worst_cases_and_the_early_stop(run):
    _, text = analyze_epochs(run / "metrics" / "epoch_metrics_20250101_000001.csv", root=run, lang="en")
    assert "Status: completed (early stop: Val_Dice did not improve for 2 validations)" in text
    assert "Val_Dice_tumour_core: final 0.200000, best 0.200000 (Epoch 4)" in text
    assert "Val_HD95_liver: final 7.500000, best 7.500000 (Epoch 4)" in text  # minimised
    worst = text.split("Worst validation cases (epoch 4")[1].splitlines()[1:6]
    # b: only liver is defined (tumour core left out); c: a false positive counts 0; a (0.85) is 6th
    assert [line.split(":")[0].strip() for line in worst] == ["b.png", "c.png", "d.png", "f.png", "e.png"]
    assert worst[0].strip() == "b.png: mean Dice 0.100000 (liver 0.100000, tumour_core -)"
    assert worst[1].strip() == "c.png: mean Dice 0.475000 (liver 0.950000, tumour_core 0.000000)"


def test_analysis_and_comparison_figures_draw_each_class(run):
    write_run(run, "20250101_000002", epochs=3, extra=PER_CLASS, monitor="Val_Dice")
    from medic.analysis import figures
    from medic.store.catalog import load_run
    e = load_run("20250101_000001", root=run).epochs
    titles = [ax.get_title() for ax in figures.training_figure(e).get_axes()]
    assert titles[-2:] == ["Per-class Dice", "Per-class HD95"]
    fig, table = compare_runs(["20250101_000001", "20250101_000002"], run)
    panel = fig.get_axes()[-1]
    assert panel.get_title().startswith("Per-class Dice vs Epoch")
    drawn = [line for line in panel.get_lines() if len(line.get_xdata())]
    assert len(drawn) == 4  # 2 runs x 2 classes
    np.testing.assert_allclose(drawn[0].get_ydata(), e["Val_Dice_liver"])
    assert {"best_Val_Dice_liver", "best_Val_Dice_tumour_core"} <= set(table.columns)


def test_watch_line_and_live_text_are_compact(run):
    header = ["Epoch", "Val_Loss", "Val_Dice", "Val_Dice_liver", "Val_Dice_tumour_core", "Val_HD95_liver",
              "Val_Dice_EMA"]
    row = dict(zip(header, ["3", "0.41", "0.55", "0.912345", "0.188", "12.5", "0.5"]))
    assert compact_cells(header, row, {"Epoch"}) == ["Val_Loss 0.41", "Val_Dice 0.55", "Val_Dice_EMA 0.5",
                                                     "Dice liver 0.912 tumour_core 0.188", "HD95 liver 12.500"]
    assert split_per_class(header[1:]) == (["Val_Loss", "Val_Dice", "Val_Dice_EMA"],
                                           {"Val_Dice_": ["Val_Dice_liver", "Val_Dice_tumour_core"],
                                            "Val_HD95_": ["Val_HD95_liver"]})
    latest = {"Val_Dice_liver": 0.9123, "Val_Dice_tumour_core": 0.5}
    assert per_class_text(latest, header) == "Per-class Dice: liver 0.912 · tumour_core 0.500"
    epoch, path = newest_strip(run / "results" / "20250101_000001")
    assert (epoch, path.read_bytes()) == (10, b"png 10")
    assert newest_strip(run / "results" / "nothing") is None
