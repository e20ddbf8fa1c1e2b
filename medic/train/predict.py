"""Segment new volumes with a trained run: ``medic predict`` and ``medic.predict(...)``.

The run's stored options decide the preprocessing (orientation, ``spacing``, ``normalize``) and
the sliding window (``patch_size``, ``sw_overlap``); each input gets one mask of its own shape
and affine, under the same file name (nnU-Net channel files ``case_0000``, ``case_0001`` → one
``case`` mask). Everything is checked before the first case is segmented (the files, their
channels and dimensions against the model's), and no existing file is overwritten. Beside the
masks, ``predict.json`` records what made them: the run, the checkpoint with its epoch and
metric, the options that shaped the preprocessing and medic's version.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from medic.config import TrainConfig
from medic.errors import MedicError, RunNotFoundError, one_line
from medic.store.files import shown_path, write_json_atomic
from medic.store.paths import Project
from medic.store.sidecar import now_str
from medic.train.data.layouts import ENDINGS, strip_ending

WRITES = (".nii", ".nii.gz", ".png")  # the formats a mask is written in, as its input
CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
RECORD = "predict.json"
# the options that decide what the model sees and how its windows are put together
PREPROCESSING = ("spatial_dims", "spacing", "normalize", "patch_size", "sw_overlap", "num_classes")
ROOT_HINT = "(run this in the project folder or pass --root DIR)"


def find_checkpoint(project: Project, run: str, checkpoint: str) -> Path:
    """``best`` | ``last`` | a path, of run ``run`` (an id or ``latest``)."""
    if checkpoint not in ("best", "last"):
        path = Path(checkpoint)
        if not path.is_file():
            raise RunNotFoundError(f"--checkpoint {checkpoint} does not exist")
        return path
    run = project.newest_resumable() if run == "latest" else run
    if run is None:
        raise RunNotFoundError(f"--run latest: no run with checkpoints in {shown_path(project.checkpoints)} {ROOT_HINT}")
    path = project.checkpoint_dir(run) / ("best_model.pth" if checkpoint == "best" else "last.pth")
    if not path.is_file():
        hint = "" if project.checkpoint_dir(run).is_dir() else f" {ROOT_HINT}"
        raise RunNotFoundError(f"run {run} has no {path.name} (looked in {shown_path(path.parent)}){hint}")
    return path


def group_inputs(source: Path | list) -> list[tuple[str, list[Path], str]]:
    """(case, files, output name) of a file, a folder or a list of files; nnU-Net channel files
    form one case."""
    missing = [p for p in (source if isinstance(source, list) else [source]) if not Path(p).exists()]
    if missing:
        raise MedicError(f"--input {missing[0]} does not exist")
    files = [Path(p) for p in source] if isinstance(source, list) else [source] if source.is_file() else sorted(
        p for p in source.iterdir() if p.is_file() and p.name.lower().endswith(ENDINGS) and not p.name.startswith("."))
    if not files:
        raise MedicError(f"--input {source} holds no images ({', '.join(ENDINGS)})")
    groups: dict[str, list[Path]] = {}
    endings: dict[str, str] = {}
    for path in files:
        stem = strip_ending(path.name)
        match = CHANNEL_RE.match(stem)
        case = match["case"] if match else stem
        groups.setdefault(case, []).append(path)
        endings[case] = path.name[len(stem):]
    return [(case, sorted(paths), case + endings[case]) for case, paths in sorted(groups.items())]


def load_model(path: Path, device):
    """The run's config and its model, in evaluation mode on ``device``."""
    from medic.train.outputs import checkpoint as ckpt
    from medic.train.models import build_model
    state = ckpt.load(path)
    cfg = TrainConfig.from_dict(state.get("config", {}), strict=False)
    weights = state["model"]
    # the input channels, from the first convolution's weight (out × in × kernel)
    in_channels = next(int(v.shape[1]) for v in weights.values() if getattr(v, "ndim", 0) >= 4)
    model = build_model(cfg, in_channels=in_channels)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError) as err:
        raise MedicError(f"checkpoint {path} does not fit its own model ({str(err).splitlines()[0][:160]})") from err
    return cfg, model.to(device).eval(), in_channels


def predict(input: str | Path | list, output: str | Path, run: str = "latest", checkpoint: str = "best",
            root: str | Path | None = None, device: str = "auto", log=print) -> list[Path]:
    """Segment every volume of ``input`` with a run's model; write one mask per case into ``output``.

    The run's stored options decide the preprocessing and the sliding window; each mask has its
    input's shape and affine and its case name (nnU-Net channel files ``case_0000``, ``case_0001``
    make one case, ``case.nii.gz``).

    Args:
        input: a NIfTI volume (or a PNG picture for a 2D data set), a folder of them, or a list.
        output: the folder the masks go to (created); it must not hold a mask of the same name.
        run: a run id or ``latest``; the run must have been trained on a Decathlon or nnU-Net data set.
        checkpoint: ``best`` (``best_model.pth``), ``last`` (``last.pth``) or a checkpoint path.
        root: the project root (default: the working directory).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        log: called with one progress line per case.

    Returns:
        The written mask paths.

    Raises:
        MedicError: an unknown run or checkpoint, a missing input, or an output folder that
            already holds one of the masks; nothing is written then.

    Example::

        import medic

        masks = medic.predict("scans/", "masks/", run="latest")
    """
    project = Project.at(root)
    path = find_checkpoint(project, run, checkpoint)
    cases = group_inputs([Path(p) for p in input] if isinstance(input, (list, tuple)) else Path(input))
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise MedicError(f"--output {out_dir} is a file, not a folder")
    taken = [name for _, _, name in cases if (out_dir / name).exists()] + \
        ([RECORD] if (out_dir / RECORD).exists() else [])
    if taken:
        raise MedicError(f"--output {out_dir} already holds {taken[0]}; give an empty or new folder")
    other = [str(p) for _, files, _ in cases for p in files if not p.name.lower().endswith(WRITES)]
    if other:
        raise MedicError(f"{other[0]}: medic predict writes masks as NIfTI or PNG; give .nii, .nii.gz or .png files")
    import torch  # after the checks: a mistake is reported before torch loads

    from medic.train.sliding import predict_volume
    from medic.train.outputs.pictures import write_mask
    from medic.train.data.volumes import medic_error_in, preprocess
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    cfg, model, in_channels = load_model(path, dev)
    if not cfg.patch:
        raise MedicError(f"checkpoint {path} is not of a volume run (no patch_size): medic predict "
                         f"segments the volumes of a run trained on a Decathlon or nnU-Net data set")
    for case, files, _ in cases:
        check_input(case, files, cfg, in_channels, path)
    pre = preprocess(cfg)
    written = []
    log(f"medic predict: run {path.parent.name}, {path.name}, {len(cases)} case(s), on {dev.type}")
    for k, (case, files, name) in enumerate(cases, start=1):
        t0 = time.perf_counter()
        record = {"image": [str(p) for p in files] if len(files) > 1 else str(files[0]), "case": case}
        try:
            out = predict_volume(model, pre, record, cfg, dev)
        except Exception as err:  # a corrupt file is found only when it is read
            raise medic_error_in(err) or MedicError(f"case {case}: cannot be segmented ({type(err).__name__}: "
                                                    f"{one_line(str(err))})") from err
        if not written:  # the folder appears with the first mask, never empty
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out_dir / RECORD, provenance(path, cfg, cases))
        write_mask(out_dir / name, out["source"], str(files[0]))
        written.append(out_dir / name)
        log(f"[{k}/{len(cases)}] {case}: {out_dir / name} ({time.perf_counter() - t0:.1f} s)")
    return written


def check_input(case: str, files: list[Path], cfg: TrainConfig, in_channels: int, checkpoint: Path) -> None:
    """A case's channels and spatial dimensions against the model's, from the headers: a 2D
    slice given to a 3D model (or the reverse) is refused before anything is written."""
    try:
        channels, shape = _channels(files)
    except Exception as err:  # nibabel and Pillow raise many types for a file they cannot read
        raise MedicError(f"case {case}: cannot read {shown_path(files[0])} ({type(err).__name__}: "
                         f"{one_line(str(err))})") from err
    if channels != in_channels:
        raise MedicError(f"case {case}: {channels} channel(s) given, the model of {shown_path(checkpoint)} "
                         f"takes {in_channels}")
    dims = int(cfg.spatial_dims) if cfg.spatial_dims in ("2", "3") else len(cfg.patch)
    given = len(shape)
    if given != dims:
        raise MedicError(f"case {case}: {files[0].name} is {given}D ({' x '.join(map(str, shape))}); the model "
                         f"of {shown_path(checkpoint)} segments {dims}D "
                         f"{'volumes' if dims == 3 else 'images'}: give {dims}D input")


def provenance(checkpoint: Path, cfg: TrainConfig, cases: list) -> dict:
    """What ``predict.json`` records: which run, checkpoint and options made the masks."""
    from medic import __version__
    from medic.train.outputs import checkpoint as ckpt
    state = ckpt.load(checkpoint)  # (a second read: the model's loader keeps only the weights)
    from medic.train.selection import selected_name
    monitor = selected_name(cfg.monitor, cfg.monitor_ema)
    return {"run_id": state.get("run_id"), "checkpoint": str(checkpoint.resolve()), "epoch": state.get("epoch"),
            "metric": {"name": monitor, "best": state.get("best"), "best_epoch": state.get("best_epoch")},
            "preprocessing": {k: getattr(cfg, k) for k in PREPROCESSING},
            "cases": [name for _, _, name in cases], "created": now_str(), "medic_version": __version__}


def _channels(files: list[Path]) -> tuple[int, tuple[int, ...]]:
    """The channels of a case and its spatial shape (trailing single slices dropped), from the
    first file's header."""
    if files[0].name.lower().endswith(".png"):
        from PIL import Image
        with Image.open(files[0]) as im:
            return len(files), (im.size[0], im.size[1])
    import nibabel as nib
    shape = tuple(int(v) for v in nib.load(str(files[0])).shape)
    channels = int(shape[3]) if len(shape) == 4 and len(files) == 1 else len(files)
    shape = shape[:3]
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return channels, shape


def case_files(data: str | Path, index: int = 0) -> list[Path]:
    """The image files (one per channel) of a training case of a Decathlon or nnU-Net data set."""
    from medic.train.data.layouts import read_layout
    return [Path(p) for p in read_layout(data).cases[index].images]


def prediction_figure(files: list[Path], mask: Path):
    """The image and the predicted mask over it, on the slice with the most predicted foreground,
    titled with the run and checkpoint that made it (``predict.json`` beside the mask)."""
    import json

    import nibabel as nib
    import numpy as np
    from matplotlib.figure import Figure

    from medic.train.outputs.overlay import DPI, PANEL_PX, legend, panel, shown
    image = np.asarray(nib.load(str(files[0])).dataobj, dtype=np.float32)
    image = image[..., 0] if image.ndim == 4 else image
    labels = np.asarray(nib.load(str(mask)).dataobj)
    case = shown(strip_ending(files[0].name), image, np.zeros_like(labels), labels)
    try:
        record = json.loads((mask.parent / RECORD).read_text())
        made = f"Run {record['run_id']}, {Path(record['checkpoint']).name} (epoch {record['epoch']})"
    except (OSError, ValueError, KeyError, TypeError):
        made = f"prediction {mask.name}"
    classes = int(labels.max()) + 1 if labels.size else 2
    side = PANEL_PX / DPI
    fig = Figure(figsize=(2 * side, side + 1.1), layout="constrained")
    where = f"{case.case}, slice {case.index}" if case.index is not None else case.case
    left, right = fig.subplots(1, 2)
    panel(left, case.image, None, classes, "ras", where)
    panel(right, case.image, case.pred, classes, "ras", f"prediction: {mask.name}")
    legend(fig, [], max(classes, 2))
    fig.suptitle(made, fontsize=11)
    return fig
