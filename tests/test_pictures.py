"""Every figure of a real 3D run, as a user sees it: validation pictures are overlays with a class
legend, named cases and slices; the strip is readable and drawn like the best epoch's picture;
every figure names its run; the comparison legend leaves logging options out. One PNG per
figure is kept in test-artifacts/ for a person to look at."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from _analysis_helpers import cli
from _train_helpers import read_csv
from conftest import PY, ROOT, child_env

from medic.train.outputs.overlay import PANEL_PX, best_slice

ARTIFACTS = ROOT / "test-artifacts"


def png_size(path):
    from PIL import Image
    with Image.open(path) as im:
        return im.size


def test_best_slice_has_the_most_foreground_in_truth_or_prediction():
    truth, pred = np.zeros((8, 8, 6), np.uint8), np.zeros((8, 8, 6), np.uint8)
    truth[2:4, 2:4, 1] = 1
    pred[1:7, 1:7, 4] = 2  # the prediction's large false positive is what needs seeing
    assert best_slice(truth, pred) == 4
    assert best_slice(truth, np.zeros_like(pred)) == 1
    assert best_slice(np.zeros_like(truth), np.zeros_like(pred)) == 3


@pytest.mark.slow
def test_the_figures_of_a_3d_run_name_it_and_show_overlays(tmp_path, runs_3d):
    data, project, first, second = runs_3d.data, runs_3d.project, runs_3d.first, runs_3d.second
    results = project / "results" / first

    best = sorted(results.glob("best_epoch_*.png"))[-1]
    width, height = png_size(best)
    assert width >= 3 * 256 and height >= 256
    strip = sorted((results / "strip").glob("epoch_*.png"))[-1]
    width, height = png_size(strip)
    assert height >= 256 and width >= 2 * 256  # one validation case: truth and prediction
    assert read_csv(project / "metrics" / f"epoch_metrics_{first}.csv")[0][-1] == "Peak_Memory_MB"

    for args in ([], ["--batch_metrics"]):
        proc = cli("analyze", "--run", first, *args, cwd=project)
        assert proc.returncode == 0, proc.stderr
    compare = cli("compare", first, second, cwd=project)
    assert compare.returncode == 0, compare.stderr
    assert "lr=0.02" in compare.stdout and "log_interval" not in compare.stdout.split("\n\n")[0]

    from medic.analysis.compare import compare_runs
    from medic.analysis.figures import training_figure
    from medic.analysis.outputs import run_title
    from medic.store.catalog import load_run
    fig, _ = compare_runs([first, second], root=project)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [f"{first} (lr=0.02)", f"{second} (lr=0.005)"]
    assert run_title(project / "metrics" / f"epoch_metrics_{first}.csv") == f"Run {first}"
    epochs = load_run(first, root=project).epochs
    titles = [ax.get_title() for ax in training_figure(epochs, title="t").axes]
    assert "Validation Metrics" not in titles and "Per-class Dice" in " ".join(titles)  # not twice

    masks = tmp_path / "predicted"
    proc = subprocess.run([PY, "-m", "medic.cli", "predict", "--run", first, "--input",
                           str(data / "imagesTr" / "case_000_0000.nii.gz"), "--output", str(masks)],
                          cwd=project, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from medic.analysis.figures import save_figure
    from medic.train.predict import prediction_figure
    predicted = tmp_path / "prediction.png"
    fig = prediction_figure([data / "imagesTr" / "case_000_0000.nii.gz"], masks / "case_000.nii.gz")
    assert fig._suptitle.get_text().startswith(f"Run {first}, best_model.pth (epoch ")
    save_figure(fig, predicted)

    ARTIFACTS.mkdir(exist_ok=True)
    analysis = project / "analysis"
    for source, name in [(best, "best_epoch.png"), (strip, "strip.png"),
                         (analysis / f"training_analysis_epoch_metrics_{first}.png", "training_analysis.png"),
                         (analysis / f"training_stats_epoch_metrics_{first}.png", "training_stats.png"),
                         (analysis / f"batch_analysis_batch_metrics_{first}.png", "batch_analysis.png"),
                         (analysis / f"comparison_{first}_vs_{second}.png", "comparison.png"),
                         (predicted, "prediction.png")]:
        shutil.copyfile(source, ARTIFACTS / f"figure_{name}")
    assert PANEL_PX >= 256


@pytest.mark.parametrize("orientation, quadrant", [("image", (0, 1)), ("columns", (1, 0)), ("ras", (0, 0))])
def test_a_class_is_drawn_in_its_colour_where_the_orientation_puts_it(orientation, quadrant):
    """Rows 0-3, columns 12-15 of the array: top right as an image is; bottom left when MONAI read
    the picture columns first; top left in RAS (x to the right, y up)."""
    from medic.train.outputs.overlay import ALPHA, CLASS_COLORS, tile
    image, labels = np.zeros((16, 16), np.float32), np.zeros((16, 16), np.uint8)
    labels[0:4, 12:16] = 1
    pixels = np.asarray(tile(image, labels, orientation)).astype(int)
    assert pixels.shape == (PANEL_PX, PANEL_PX, 3)
    red = int(CLASS_COLORS[0][1:3], 16)
    for row in (0, 1):
        for col in (0, 1):
            y, x = (row * 3 + 0.5) * PANEL_PX // 4, (col * 3 + 0.5) * PANEL_PX // 4  # a corner block's middle
            expected = round(ALPHA * red) if (row, col) == quadrant else 0
            assert abs(pixels[int(y), int(x), 0] - expected) <= 1, (orientation, row, col, pixels[int(y), int(x)])
