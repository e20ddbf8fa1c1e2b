"""Segment new volumes with a trained run: ``medic predict`` and ``medic.predict(...)``.

The run's stored options decide the preprocessing (orientation, ``spacing``, ``normalize``) and
the sliding window (``patch_size``, ``sw_overlap``); each input gets one mask of its own shape
and affine, under the same file name (nnU-Net channel files ``case_0000``, ``case_0001`` → one
``case`` mask). Everything is checked before the first case is segmented, and no existing file
is overwritten.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from medic.config import TrainConfig
from medic.errors import MedicError, RunNotFoundError
from medic.store.paths import Project
from medic.train.layouts import ENDINGS, strip_ending

WRITES = (".nii", ".nii.gz", ".png")  # the formats a mask is written in, as its input
CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def find_checkpoint(project: Project, run: str, checkpoint: str) -> Path:
    """``best`` | ``last`` | a path, of run ``run`` (an id or ``latest``)."""
    if checkpoint not in ("best", "last"):
        path = Path(checkpoint)
        if not path.is_file():
            raise RunNotFoundError(f"--checkpoint {checkpoint} does not exist")
        return path
    run = project.newest_resumable() if run == "latest" else run
    if run is None:
        raise RunNotFoundError(f"--run latest: no run with checkpoints in {project.checkpoints}")
    path = project.checkpoint_dir(run) / ("best_model.pth" if checkpoint == "best" else "last.pth")
    if not path.is_file():
        raise RunNotFoundError(f"run {run} has no {path.name} (looked in {path.parent})")
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
    from medic.train import checkpoint as ckpt
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
    taken = [name for _, _, name in cases if (out_dir / name).exists()]
    if taken:
        raise MedicError(f"--output {out_dir} already holds {taken[0]}; give an empty or new folder")
    other = [str(p) for _, files, _ in cases for p in files if not p.name.lower().endswith(WRITES)]
    if other:
        raise MedicError(f"{other[0]}: medic predict writes masks as NIfTI or PNG; give .nii, .nii.gz or .png files")
    import torch  # after the checks: a mistake is reported before torch loads

    from medic.train.infer import predict_volume
    from medic.train.pictures import write_mask
    from medic.train.volumes import medic_error_in, preprocess
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    cfg, model, in_channels = load_model(path, dev)
    if not cfg.patch:
        raise MedicError(f"checkpoint {path} is not of a volume run (no patch_size): medic predict "
                         f"segments the volumes of a run trained on a Decathlon or nnU-Net data set")
    for case, files, _ in cases:
        channels = _channels(files)
        if channels != in_channels:
            raise MedicError(f"case {case}: {channels} channel(s) given, the model takes {in_channels}")
    pre = preprocess(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    log(f"medic predict: run {path.parent.name}, {path.name}, {len(cases)} case(s), on {dev.type}")
    for k, (case, files, name) in enumerate(cases, start=1):
        t0 = time.perf_counter()
        record = {"image": [str(p) for p in files] if len(files) > 1 else str(files[0]), "case": case}
        try:
            out = predict_volume(model, pre, record, cfg, dev)
        except Exception as err:  # a corrupt file is found only when it is read
            raise medic_error_in(err) or MedicError(f"case {case}: cannot be segmented ({type(err).__name__}: "
                                                    f"{str(err)[:200]})") from err
        write_mask(out_dir / name, out["source"], str(files[0]))
        written.append(out_dir / name)
        log(f"[{k}/{len(cases)}] {case}: {out_dir / name} ({time.perf_counter() - t0:.1f} s)")
    return written


def _channels(files: list[Path]) -> int:
    if len(files) > 1 or files[0].name.lower().endswith(".png"):
        return len(files)
    import nibabel as nib
    shape = nib.load(str(files[0])).shape
    return int(shape[3]) if len(shape) == 4 else 1


def case_files(data: str | Path, index: int = 0) -> list[Path]:
    """The image files (one per channel) of a training case of a Decathlon or nnU-Net data set."""
    from medic.train.layouts import read_layout
    return [Path(p) for p in read_layout(data).cases[index].images]


def prediction_figure(files: list[Path], mask: Path):
    """Image and predicted mask on the slice with the most predicted foreground."""
    import nibabel as nib
    import numpy as np
    from matplotlib.figure import Figure
    image = np.asarray(nib.load(str(files[0])).dataobj, dtype=np.float32)
    image = image[..., 0] if image.ndim == 4 else image
    labels = np.asarray(nib.load(str(mask)).dataobj)
    k = int((labels > 0).reshape(-1, labels.shape[-1]).sum(axis=0).argmax())
    fig = Figure(figsize=(6, 3), constrained_layout=True)
    for ax, data, title, cmap in zip(fig.subplots(1, 2), (image[..., k], labels[..., k]),
                                     (f"{files[0].name}, slice {k}", f"prediction: {mask.name}"), ("gray", "viridis")):
        ax.imshow(data.T, cmap=cmap, origin="lower", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
