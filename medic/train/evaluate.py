"""Score masks against labels: ``medic evaluate`` and ``medic.train.evaluate.evaluate(...)``.

Cases are matched by name (the file name without its ending: ``case.nii.gz`` ↔ ``case.nii.gz``,
``case.png`` ↔ ``case.nii.gz``). The metrics are validation's own (``medic.train.metrics``): the
same Dice from voxel counts, HD95 and NSD with the same empty-class rule, in mm from each
label's header (its voxel size), in pixels for pictures. Everything is checked before anything is
written: matching names, shapes and affines, label values. It writes, into a new folder
(``analysis/evaluations/eval_<timestamp>/`` unless ``--output``):

    cases.csv         one row per case, in the per-case tables' format (``compare --paired`` reads it)
    summary.csv       one row: the cases, Dice (the mean over classes) and each class's values
    evaluation.json   the folders, labels, metrics, the cases left out, the truth's fingerprint
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from medic.errors import MedicError
from medic.store.files import new_stamped_dir, write_json_atomic, write_text_atomic
from medic.store.paths import Project
from medic.train.data.layouts import ENDINGS, header, strip_ending
from medic.train.selection import METRICS, column_safe

EVAL_DIR = ("analysis", "evaluations")


def mask_files(folder: str | Path, what: str) -> dict[str, Path]:
    """The case name → file of every mask in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedicError(f"--{what} {folder} is not a folder")
    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower().endswith(ENDINGS) and not p.name.startswith("."):
            files.setdefault(strip_ending(p.name), p)
    return files


def label_names(path: str | Path | None) -> list[str] | None:
    """The label names (indexed by value) of a Decathlon (``{"0": "background"}``) or nnU-Net
    (``{"background": 0}``) ``dataset.json``, or None without one."""
    if not path:
        return None
    path = Path(path)
    path = path / "dataset.json" if path.is_dir() else path
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))["labels"]
        try:
            by_value = {int(k): str(v) for k, v in labels.items()}
        except ValueError:
            by_value = {int(v): str(k) for k, v in labels.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise MedicError(f"--labels {path}: not a dataset.json with 'labels' ({type(err).__name__}: {err})") from err
    if sorted(by_value) != list(range(len(by_value))) or len(by_value) < 2:
        raise MedicError(f"--labels {path}: label values must be 0, 1, ... consecutively, got {sorted(by_value)}")
    return [by_value[v] for v in range(len(by_value))]


def read_mask(path: Path) -> np.ndarray:
    """A mask's voxels as integers (trailing axes of size 1 dropped)."""
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib
            data = np.asarray(nib.load(str(path)).dataobj)
        elif name.endswith(".nrrd"):
            import nrrd
            data = nrrd.read(str(path))[0]
        else:
            from PIL import Image
            with Image.open(path) as im:
                data = np.asarray(im)
    except Exception as err:  # any decoder failure means the same to the user
        raise MedicError(f"{path}: cannot be read ({type(err).__name__}: {err})") from err
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.size and (data.min() < 0 or not np.allclose(data, np.round(data))):
        raise MedicError(f"{path}: holds values that are not class indices")
    return np.round(data).astype(np.int64)


def check_pair(case: str, pred: Path, truth: Path) -> None:
    """Shapes and affines of a mask and its label agree (from the headers)."""
    (ps, pa), (ts, ta) = header(str(pred), case), header(str(truth), case)
    strip = lambda s: tuple(s[:2]) + tuple(v for v in s[2:] if v != 1)  # noqa: E731
    if ps and ts and strip(ps) != strip(ts):
        raise MedicError(f"case {case}: mask {pred.name} {ps} and label {truth.name} {ts} differ in shape")
    if pa is not None and ta is not None and not np.allclose(pa, ta, atol=1e-3):
        raise MedicError(f"case {case}: mask {pred.name} and label {truth.name} have different affines "
                         f"(positions in space)")


def fingerprint(files: list[Path]) -> str:
    """A digest of the labels' names and bytes: two evaluations on the same labels agree."""
    h = hashlib.sha256()
    for p in files:
        h.update(strip_ending(p.name).encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def evaluate(pred: str | Path, truth: str | Path, labels: str | Path | None = None, metrics: str = "dice",
             output: str | Path | None = None, root: str | Path | None = None, nsd_tolerance: float = 1.0,
             log=print) -> Path:
    """Score the masks in ``pred`` against the labels in ``truth``, matched by case name.

    Args:
        pred: the folder of predicted masks.
        truth: the folder of labels (e.g. a data set's ``labelsTr/``).
        labels: a ``dataset.json`` (or its folder) naming the classes; without it the classes
            are ``class_1``, ... up to the largest value found.
        metrics: comma-separated ``dice``, ``hd95``, ``nsd`` (Dice always).
        output: a new or empty folder for the tables (default ``analysis/evaluations/eval_<timestamp>``).
        root: the project root (default: the working directory).
        nsd_tolerance: NSD tolerance in mm (pixels for pictures).
        log: where the progress lines go.

    Returns:
        The folder written (``cases.csv``, ``summary.csv``, ``evaluation.json``).
    """
    asked = [m.strip() for m in metrics.split(",") if m.strip()]
    if not asked or any(m not in METRICS for m in asked):
        raise MedicError(f"--metrics must list {', '.join(METRICS)} (comma-separated), got {metrics!r}")
    which = tuple(m for m in METRICS if m in asked and m != "dice")
    preds, truths = mask_files(pred, "pred"), mask_files(truth, "truth")
    common = sorted(set(preds) & set(truths))
    if not common:
        raise MedicError(f"--pred {pred} ({len(preds)} masks{', e.g. ' + next(iter(preds)) if preds else ''}) and "
                         f"--truth {truth} ({len(truths)}{', e.g. ' + next(iter(truths)) if truths else ''}) "
                         f"have no case name in common")
    out_dir = Path(output) if output else None
    if out_dir is not None and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MedicError(f"--output {out_dir} already holds files; give an empty or new folder")
    names = label_names(labels)
    for case in common:
        check_pair(case, preds[case], truths[case])
    arrays = {}
    for case in common:
        p, t = read_mask(preds[case]), read_mask(truths[case])
        if p.shape != t.shape:
            raise MedicError(f"case {case}: mask {p.shape} and label {t.shape} differ in shape")
        arrays[case] = (p, t)
    top = max(int(max(p.max(), t.max())) for p, t in arrays.values())
    n_classes = len(names) if names else max(2, top + 1)
    if top >= n_classes:
        raise MedicError(f"a mask or label holds the value {top}, beyond the {n_classes} labels of {labels}")
    classes = [column_safe(n) for n in names[1:]] if names else [f"class_{c}" for c in range(1, n_classes)]
    # torch loads here, once the input is checked: a mistake is reported seconds sooner
    import torch

    from medic.train.outputs.casefiles import write_case_table
    from medic.train.metrics import CaseRows, Distances, confusion_counts, voxel_size
    rows = CaseRows()
    for k, case in enumerate(common):
        p, t = arrays[case]
        spacing = voxel_size(header(str(truths[case]), case)[1], t.ndim)
        pt, tt = torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None]
        counts = confusion_counts(pt, tt, n_classes)
        values = Distances(n_classes, which, spacing, nsd_tolerance)(pt, tt, counts) if which else {}
        rows.add([k], [case], counts, values)
    folder = out_dir or new_stamped_dir(Project.at(root).root.joinpath(*EVAL_DIR), "eval")
    folder.mkdir(parents=True, exist_ok=True)
    table = write_case_table(folder, 0, rows, classes, filename="cases.csv")
    summary = {"Cases": len(common), **{k[len("Val_"):]: v for k, v in rows.summary(classes).items()}}
    write_text_atomic(folder / "summary.csv", ",".join(summary) + "\n" +
                      ",".join("" if isinstance(v, float) and v != v else str(round(v, 6)) for v in summary.values()) + "\n")
    left = {"no_truth": sorted(set(preds) - set(truths)), "no_prediction": sorted(set(truths) - set(preds))}
    write_json_atomic(folder / "evaluation.json", {
        "pred": str(Path(pred).resolve()), "truth": str(Path(truth).resolve()),
        "labels": str(labels) if labels else None, "classes": classes, "metrics": ["dice", *which],
        "nsd_tolerance": nsd_tolerance, "cases": common, "left_out": left,
        "truth_fingerprint": fingerprint([truths[c] for c in common]), "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    for what, cases in left.items():
        if cases:
            log(f"warning: {len(cases)} case(s) with {what.replace('_', ' ')} left out (e.g. {cases[0]})")
    log(f"medic evaluate: {len(common)} case(s); " + ", ".join(
        f"{k} {v:.4f}" for k, v in summary.items() if k != "Cases" and v == v))
    log(f"written: {table}")
    return folder
