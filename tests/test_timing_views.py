"""Where the time goes, shown where people look: the report (with the loader warning), the
figure panel, medic watch, medic runs; the recorder itself; MONAI loaded for what a run uses."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from _analysis_helpers import write_run
from conftest import PY, ROOT, child_env
from medic.analysis import analyze_epochs
from medic.analysis.figures import training_figure
from medic.commands.runs import format_table
from medic.store.catalog import load_run, runs

RUN = "20250101_000000"


def timed_run(project, wait: float, epochs: int = 4):
    """A run of 4 epochs of about 10 s (40 s in all), ``wait`` of each waiting for data, 1 s validating."""
    return write_run(project, RUN, epochs=epochs, epoch_time=9.75, extra={
        "Val_Dice": lambda e: 0.5 + e / 20, "Samples_Per_Second": lambda e: 90.0 + e,
        "Data_Seconds": lambda e: wait, "Val_Seconds": lambda e: 1.0, "Peak_Memory_MB": lambda e: 500.0 + e})


def report_of(project) -> str:
    return analyze_epochs(project / "metrics" / f"epoch_metrics_{RUN}.csv", root=project)[1]


def test_the_report_says_where_the_time_goes(project):
    timed_run(project, wait=1.0)
    text = report_of(project)
    assert "Where the time goes:" in text
    assert "Mean throughput: 92.5 samples/s" in text
    assert "Data wait: 4.00 s of 40.00 s (10.0% of the epochs)" in text
    assert "Validation: 4.00 s (10.0% of the epochs)" in text and "Peak memory: 504 MB" in text
    assert "bottleneck" not in text
    # the timing columns are not reported as metrics with a "best" value
    assert "Data_Seconds: final" not in text and "Val_Dice: final" in text


def test_the_report_says_what_the_writers_did_in_the_background(project):
    """The trainer records its background writers' seconds in the sidecar; the report says them
    (a run without the record has no such line)."""
    from medic.store.sidecar import update_sidecar
    timed_run(project, wait=1.0)
    assert "in the background (" not in report_of(project)
    update_sidecar(project / "metrics" / f"run_{RUN}.json", background_output_s=3.25)
    assert "  Outputs written in the background (best masks, pictures, case tables; alongside the validation): " \
           "3.25 s" in report_of(project).splitlines()


def test_a_loader_bound_run_gets_one_warning_line(project):
    timed_run(project, wait=3.0)
    lines = [ln for ln in report_of(project).splitlines() if "bottleneck" in ln]
    assert lines == ["  Warning: the data wait is 30% of the epoch time: the loader is the bottleneck: "
                     "raise --num_workers or cache"]


def test_the_figure_panel_stacks_data_wait_compute_and_validation(project):
    timed_run(project, wait=3.0)
    e = load_run(RUN, root=project).epochs
    axes = training_figure(e).get_axes()
    panel, twin = axes[-2], axes[-1]
    assert panel.get_title() == "Where the time goes"
    bars = {c.get_label(): [p.get_height() for p in c.patches] for c in panel.containers}
    np.testing.assert_allclose(bars["data wait"], e["Data_Seconds"])
    np.testing.assert_allclose(bars["compute"], e["Epoch_Time_Seconds"] - e["Data_Seconds"] - e["Val_Seconds"])
    np.testing.assert_allclose(bars["validation"], e["Val_Seconds"])
    np.testing.assert_allclose(twin.get_lines()[0].get_ydata(), e["Samples_Per_Second"])
    # the Validation Metrics panel shows Val_Dice, not the timing columns
    val = next(ax for ax in axes if ax.get_title() == "Validation Metrics")
    assert [ln.get_label() for ln in val.get_lines()] == ["Val_Dice"]


def test_watch_and_runs_show_samples_per_second(project):
    timed_run(project, wait=1.0)
    out = subprocess.run([PY, "-m", "medic.cli", "watch", "--once", "--lang", "en"], cwd=project,
                         env=child_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    last = out.stdout.splitlines()[-2]
    assert last.startswith("Epoch [4") and last.endswith("| Val_Dice 0.700000 | 94.0 samples/s"), last
    assert "Data_Seconds" not in out.stdout and "Peak_Memory_MB" not in out.stdout
    frame = runs(project)
    assert frame.loc[0, "samples_per_s"] == pytest.approx(92.5)
    assert "samples/s" in format_table(frame).splitlines()[0] and "92.5" in format_table(frame)


def test_the_theme_is_seaborns_without_importing_it():
    sns = pytest.importorskip("seaborn")
    import matplotlib as mpl

    from medic.analysis.figures import themed
    with mpl.rc_context():
        sns.set_theme(style="whitegrid", context="notebook", palette="deep",
                      rc={"axes.titleweight": "bold", "axes.titlesize": 13, "legend.fontsize": 9,
                          "legend.framealpha": 0.85, "figure.dpi": 100, "axes.titley": 1.0})
        # image.cmap: a colormap only seaborn registers; the colour cycle is compared as hex
        theirs = {k: v for k, v in mpl.rcParams.items() if k not in ("image.cmap", "axes.prop_cycle")}
        palette = sns.color_palette("deep").as_hex()
        cycle = [mpl.colors.to_hex(c) for c in mpl.rcParams["axes.prop_cycle"].by_key()["color"]]
    with themed() as colors:
        ours = dict(mpl.rcParams)
        our_cycle = [mpl.colors.to_hex(c) for c in mpl.rcParams["axes.prop_cycle"].by_key()["color"]]
    assert colors == palette == cycle == our_cycle
    assert {k: v for k, v in ours.items() if k in theirs} == theirs


def test_the_recorder_times_the_data_wait_of_one_process():
    import torch

    from medic.train.telemetry import EpochTimer

    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            time.sleep(0.02)
            return torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)

    timer = EpochTimer(torch.device("cpu"))
    loader = torch.utils.data.DataLoader(Slow(), batch_size=2)
    seen = [b for b, _ in timer.batches(loader, 3)]
    timer.end_loop()
    row = timer.finish(None, None)
    assert seen == [3, 4, 5] and timer.samples == 6
    assert list(row) == ["Samples_Per_Second", "Data_Seconds", "Peak_Memory_MB"]
    assert 0.12 <= row["Data_Seconds"] <= timer.loop_s
    assert row["Samples_Per_Second"] == pytest.approx(6 / timer.loop_s)
    assert list(timer.finish(None, 0.5)) == ["Samples_Per_Second", "Data_Seconds", "Val_Seconds", "Peak_Memory_MB"]


PROBE = """
import sys
from medic.config import TrainConfig
from medic.train.data import monai_loader as imports
held = ("ignite", "mlflow", "jsonschema", "matplotlib", "pandas")
cfg = TrainConfig.from_dict({%s}, strict=False)
imports.load(cfg).join()
from monai.networks.nets import UNet
from monai.losses import DiceCELoss
print(",".join(sorted(m for m in held if m in sys.modules)))
import pandas, matplotlib  # still importable afterwards
print("ok")
"""


@pytest.mark.parametrize("options, loaded", [
    ("", []),
    pytest.param("'model': 'pkg:fn'", ["ignite", "jsonschema", "matplotlib", "mlflow", "pandas"],
                 marks=pytest.mark.slow),  # all of MONAI: seconds more
], ids=["built-in model and data", "a plug-in"])
def test_monai_is_loaded_for_what_a_run_uses(options, loaded):
    optional = [m for m in loaded if subprocess.run([PY, "-c", f"import {m}"], capture_output=True).returncode == 0]
    out = subprocess.run([PY, "-c", PROBE % options], cwd=ROOT, env=child_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [",".join(optional), "ok"]


def test_a_resume_a_plug_in_or_the_environment_load_all_of_monai(monkeypatch):
    from medic.config import TrainConfig
    from medic.train.data.monai_loader import IMPORT_ALL_ENV, needs_all
    monkeypatch.delenv(IMPORT_ALL_ENV, raising=False)
    assert not needs_all(TrainConfig())
    assert needs_all(TrainConfig(model="pkg:fn")) and needs_all(TrainConfig(dataset="pkg:fn"))
    assert needs_all(TrainConfig(resume="latest"))
    monkeypatch.setenv(IMPORT_ALL_ENV, "1")
    assert needs_all(TrainConfig())
    monkeypatch.setenv(IMPORT_ALL_ENV, "0")  # plug-ins that use none of the held-back parts
    assert not needs_all(TrainConfig(model="pkg:fn")) and not needs_all(TrainConfig(resume="latest"))


def test_a_resume_loads_all_of_monai_only_for_a_run_with_a_plug_in(tmp_path, monkeypatch):
    import json
    from medic.config import TrainConfig
    from medic.train.data.monai_loader import IMPORT_ALL_ENV, needs_all
    monkeypatch.delenv(IMPORT_ALL_ENV, raising=False)
    (tmp_path / "metrics").mkdir()
    for run_id, model in (("20250101_000000", ""), ("20250101_000001", "pkg:fn")):
        (tmp_path / "metrics" / f"run_{run_id}.json").write_text(json.dumps({"config": {"model": model}}))
    assert not needs_all(TrainConfig(resume="20250101_000000", output_dir=str(tmp_path)))
    assert needs_all(TrainConfig(resume="20250101_000001", output_dir=str(tmp_path)))
    assert needs_all(TrainConfig(resume="20250101_000002", output_dir=str(tmp_path)))  # no sidecar
