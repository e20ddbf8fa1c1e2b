"""K-fold cross-validation, ``medic evaluate`` and ``medic.load_model``: the split against
scikit-learn's ``KFold`` (nnU-Net's own split), a given ``splits_final.json`` honoured by a real
run, that run's best masks evaluated against the labels (= its per-case Dice), a 3-fold
cross-validation end to end, and the bad input refused with one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from _analysis_helpers import cli
from _train_helpers import TINY, only_run_id, train
from _volume_helpers import AFFINE, make_decathlon, save
from sklearn.model_selection import KFold

from medic.config import TrainConfig
from medic.train.data.splits import fold_cases, generate_splits, kfold

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("n, k, seed", [(5, 5, 12345), (7, 3, 0), (12, 5, 12345), (23, 5, 4), (10, 2, 1)])
def test_kfold_is_sklearns(n, k, seed):
    ours = kfold(n, k, seed)
    theirs = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(np.arange(n)))
    assert [(tr, va) for tr, va in ours] == [(tr.tolist(), va.tolist()) for tr, va in theirs]


def test_nnunet_split_is_nnunets():
    """nnU-Net: ``generate_crossval_split(np.sort(identifiers), seed=12345, n_splits=5)``."""
    names = [f"liver_{i}" for i in (7, 3, 11, 0, 5, 9, 1, 2, 10, 4, 8, 6, 12)]  # listed unsorted
    keys = np.sort(names)
    expected = [{"train": list(keys[tr]), "val": list(keys[va])}
                for tr, va in KFold(n_splits=5, shuffle=True, random_state=12345).split(keys)]
    assert generate_splits(names, 5, 12345) == expected
    for i in range(5):  # fold i of an nnU-Net set is nnU-Net's fold i, whatever --seed says
        cfg = TrainConfig(folds=5, fold=i, seed=3)
        train_idx, val_idx = fold_cases(cfg, names, "nnunet")
        assert sorted(names[j] for j in val_idx) == sorted(expected[i]["val"])
        assert sorted(names[j] for j in train_idx) == sorted(expected[i]["train"])
    # a Decathlon set (or K != 5) is seeded by --seed
    _, val_idx = fold_cases(TrainConfig(folds=5, fold=0, seed=3), names, "decathlon")
    assert sorted(names[j] for j in val_idx) == sorted(generate_splits(names, 5, 3)[0]["val"])


@pytest.mark.parametrize("args, expected", [
    (["--folds", "3", "--fold", "3"], "--fold 3 is out of range"),
    (["--folds", "3", "--fold", "1", "--val_fraction", "0.2"], "leave out --val_fraction"),
    (["--folds", "3"], "choose the fold to validate"),
    (["--splits", "SPLITS", "--fold", "0"], "case case_x is not in the data set"),
    (["--splits", "SPLITS", "--folds", "3", "--fold", "0"], "disagrees with"),
    (["--splits", "SPLITS", "--fold", "2"], "--fold 2 is out of range"),
])
def test_bad_folds_refused_before_start(project, args, expected):
    splits = project.parent / "splits_final.json"
    splits.write_text(json.dumps([{"train": ["0", "1"], "val": ["case_x"]}, {"train": ["0"], "val": ["1"]}]))
    args = [str(splits) if a == "SPLITS" else a for a in args]
    proc = train(project, *TINY, "--epochs", "1", *args, check=False)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and list(project.iterdir()) == []


@pytest.fixture(scope="module")
def fold_run(tmp_path_factory):
    """A 1-epoch run on a Decathlon set with its own splits_final.json (2 folds), fold 1."""
    root = tmp_path_factory.mktemp("fold_run")
    data = make_decathlon(root / "Task01_Test", n=6)
    folds = [{"train": ["case_001", "case_004", "case_005"], "val": ["case_000", "case_002", "case_003"]},
             {"train": ["case_000", "case_002", "case_003", "case_005"], "val": ["case_004", "case_001"]}]
    (data / "splits_final.json").write_text(json.dumps(folds))
    project = root / "project"
    project.mkdir()
    train(project, "--data", str(data), "--fold", "1", "--epochs", "1", "--batch_size", "2", "--log_interval", "1",
          "--val_metrics", "dice,hd95", timeout=300)
    return project, data, only_run_id(project)


@pytest.mark.slow
def test_splits_file_honoured(fold_run):
    project, data, run_id = fold_run
    side = json.loads((project / "metrics" / f"run_{run_id}.json").read_text())
    assert (side["config"]["fold"], side["config"]["folds"]) == (1, 2)
    assert side["config"]["splits"] == str((data / "splits_final.json").resolve())
    masks = sorted(p.name for p in (project / "results" / run_id / "best_masks").iterdir())
    assert masks == ["case_001.nii.gz", "case_004.nii.gz"]  # written for every validation case
    if "val_cases" in side:
        assert sorted(map(str, side["val_cases"])) == ["case_001", "case_004"]
    if "train_cases" in side:
        assert sorted(map(str, side["train_cases"])) == ["case_000", "case_002", "case_003", "case_005"]


@pytest.mark.slow
def test_evaluate_best_masks_equals_the_runs_dice(fold_run):
    project, data, run_id = fold_run
    proc = cli("evaluate", "--pred", f"results/{run_id}/best_masks", "--truth", str(data / "labelsTr"),
               "--labels", str(data / "dataset.json"), "--metrics", "dice,hd95", "--output", "eval_best", cwd=project)
    assert proc.returncode == 0, proc.stderr
    ours = pd.read_csv(project / "eval_best" / "cases.csv", dtype={"Case": str})
    run = pd.read_csv(project / "results" / run_id / "validation_epoch_1.csv", dtype={"Case": str})
    assert ours["Case"].tolist() == ["case_001", "case_004"]
    named = run["Case"].tolist() == ours["Case"].tolist()  # else indices, in the same (case) order
    assert named or run["Case"].str.isdigit().all()
    assert list(ours.columns) == list(run.columns)
    np.testing.assert_allclose(ours["Dice_tumour"], run["Dice_tumour"], atol=2e-6)
    # HD95 in mm in both (voxels of 1.5 x 1.2 x 2.5 mm), not in voxels during training
    np.testing.assert_allclose(ours["HD95_tumour"], run["HD95_tumour"], rtol=1e-5)
    assert ours["gt_voxels_tumour"].tolist() == run["gt_voxels_tumour"].tolist()
    assert ours["pred_voxels_tumour"].tolist() == run["pred_voxels_tumour"].tolist()
    summary = pd.read_csv(project / "eval_best" / "summary.csv")
    assert summary["Dice_tumour"].iloc[0] == pytest.approx(run["Dice_tumour"].mean(), abs=1e-5)
    # medic predict --evaluate: the best checkpoint segments the two cases again and scores them alike
    inputs = project / "inputs"
    inputs.mkdir()
    for case in ("case_001", "case_004"):
        shutil.copy(data / "imagesTr" / f"{case}.nii.gz", inputs)
    proc = cli("predict", "--run", run_id, "--input", "inputs", "--output", "masks", "--evaluate",
               str(data / "labelsTr"), cwd=project, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "4 case(s) with no prediction left out" in proc.stdout
    chained = pd.read_csv(next((project / "analysis" / "evaluations").iterdir()) / "cases.csv", dtype={"Case": str})
    np.testing.assert_allclose(chained["Dice_tumour"], ours["Dice_tumour"], atol=2e-6)
    if not named:
        return
    # the evaluation pairs with the run it scored: the same cases, no difference
    proc = cli("compare", "eval_best", run_id, "--paired", "--format", "csv", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].startswith("tumour,2,") and proc.stdout.splitlines()[1].endswith(",0,0,2")


@pytest.mark.slow
def test_evaluate_bad_input(fold_run, tmp_path):
    from medic.errors import MedicError
    from medic.train.evaluate import evaluate
    project, data, run_id = fold_run
    masks = project / "results" / run_id / "best_masks"
    proc = cli("evaluate", "--pred", str(masks), "--truth", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "no case name in common" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "analysis").exists()
    bad = tmp_path / "bad"
    shutil.copytree(masks, bad)
    save(bad / "case_001.nii.gz", np.zeros((10, 10, 10), np.uint8))
    moved = tmp_path / "moved"
    shutil.copytree(masks, moved)
    shifted = AFFINE.copy()
    shifted[0, 3] += 5
    save(moved / "case_004.nii.gz", np.zeros((40, 36, 20), np.uint8), shifted)
    for pred, expected in ((bad, "differ in shape"), (moved, "different affines")):
        with pytest.raises(MedicError, match=expected):
            evaluate(pred, data / "labelsTr", root=tmp_path)
        assert not (tmp_path / "analysis").exists()


@pytest.mark.slow
def test_load_model(fold_run):
    import sys

    import medic
    project, _, run_id = fold_run
    model, cfg = medic.load_model(run_id, root=project)
    assert "torch" in sys.modules and not model.training and cfg.fold == 1 and cfg.data.endswith("Task01_Test")
    last, _ = medic.load_model(run_id, "last", root=project)
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), last.state_dict().values()))


@pytest.mark.slow
def test_three_fold_cross_validation(project):
    proc = cli("train", "--num_samples", "12", "--image_size", "32", "--log_interval", "2", "--folds", "3", "--fold", "all", "--epochs", "1",
               "--slots", "2", cwd=project, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = next((project / "analysis" / "cv").iterdir())
    record = json.loads((folder / "cv.json").read_text())
    assert record["folds"] == 3 and record["epoch"] == "last" and len(record["runs"]) == 3
    cases = pd.read_csv(folder / "cases.csv", dtype={"Case": str})
    assert sorted(cases["Case"], key=int) == [str(i) for i in range(12)]  # every case validated once
    summary = pd.read_csv(folder / "summary.csv").set_index("class")
    per_fold = []
    for fold, run_id in enumerate(record["runs"]):
        side = json.loads((project / "metrics" / f"run_{run_id}.json").read_text())
        assert (side["config"]["fold"], side["config"]["folds"]) == (fold, 3)
        last = pd.read_csv(project / "results" / run_id / "validation_epoch_1.csv", dtype={"Case": str})
        assert sorted(last["Case"]) == sorted(cases.loc[cases["Fold"] == fold, "Case"])
        epochs = pd.read_csv(project / "metrics" / f"epoch_metrics_{run_id}.csv")
        assert last["Dice_class_1"].mean() == pytest.approx(epochs["Val_Dice_class_1"].iloc[-1], abs=1e-5)
        per_fold.append(last["Dice_class_1"].mean())
    assert summary.loc["class_1", "mean"] == pytest.approx(np.mean(per_fold))
    assert summary.loc["class_1", "std"] == pytest.approx(np.std(per_fold, ddof=1))
    assert summary.loc["mean", "mean"] == pytest.approx(np.mean(per_fold))
    assert {"summary.md", "summary.tex", "summary.png"} <= {p.name for p in folder.iterdir()}
    assert "| class_1 |" in (folder / "summary.md").read_text()
