"""The medical data layouts: a Medical Segmentation Decathlon task and an nnU-Net v2 raw data set.

    Decathlon   imagesTr/, labelsTr/, dataset.json with "labels" {"0": "background", ...},
                "modality" and the "training" list; several modalities = 4D images, channels last
    nnU-Net v2  imagesTr/<case>_0000<ending> (one file per channel), labelsTr/<case><ending>,
                dataset.json with "channel_names", "labels" {"background": 0, ...}, "file_ending"

Read and checked before any worker starts, without torch: the layout, then every file's header
(shape, affine, channels) and every label's values. Every problem is one line naming its case, all
of them are reported at once (``Problems``), and nothing is written. What a header cannot tell
(corrupt data) is found when the case is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medic.errors import MedicError, Problems
from medic.store.files import shown_path

ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff")
CT_NAMES = ("ct",)
MAX_PATCH = 96


@dataclass
class Case:
    name: str
    images: list[str]          # one file per channel (nnU-Net), or one file (Decathlon)
    label: str


@dataclass
class Layout:
    kind: str                  # "decathlon" or "nnunet"
    root: Path
    cases: list[Case]
    label_names: list[str]     # indexed by label value, background at 0
    modalities: list[str]      # one name per input channel
    file_ending: str
    shapes: list[tuple[int, ...]] = field(default_factory=list)   # per case, spatial, in RAS order
    zooms: list[tuple[float, ...]] = field(default_factory=list)  # per case, in RAS order
    values: list[list] = field(default_factory=list)              # per case, the label's values

    @property
    def channels_last(self) -> bool:
        """Decathlon multi-modality images are 4D with the channels last."""
        return self.kind == "decathlon" and len(self.modalities) > 1

    @property
    def is_ct(self) -> bool:
        return all(m.strip().lower() in CT_NAMES for m in self.modalities)

    def records(self) -> list[dict]:
        """The cases as MONAI data dicts (``case`` names the case in messages)."""
        return [{"image": c.images if len(c.images) > 1 else c.images[0], "label": c.label, "case": c.name}
                for c in self.cases]


def is_layout(root: str | Path) -> bool:
    root = Path(root)
    return (root / "dataset.json").is_file() or (root / "imagesTr").is_dir()


def read_layout(root: str | Path, problems: Problems | None = None) -> Layout:
    """The layout of ``root`` from its dataset.json and folders (no file is opened). A case with
    a missing file is left out and added to ``problems`` (raised at once without it)."""
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise MedicError(f"data folder {shown_path(root)} has imagesTr/ but no dataset.json (a Decathlon or nnU-Net "
                         f"data set needs one)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MedicError(f"{shown_path(meta_path)} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or "labels" not in meta:
        raise MedicError(f"{shown_path(meta_path)} has no 'labels'")
    for sub in ("imagesTr", "labelsTr"):
        if not (root / sub).is_dir():
            raise MedicError(f"data folder {shown_path(root)} has no {sub}/ subfolder")
    own = Problems() if problems is None else problems
    layout = _nnunet(root, meta, own) if "channel_names" in meta or "file_ending" in meta else _decathlon(root, meta, own)
    if problems is None:
        own.check(str(root))
    return layout


def _decathlon(root: Path, meta: dict, problems: Problems) -> Layout:
    try:
        labels = {int(k): str(v) for k, v in meta["labels"].items()}
        modality = meta.get("modality") or {"0": "unknown"}
        modalities = [str(modality[k]) for k in sorted(modality, key=int)]
    except (ValueError, AttributeError, TypeError) as err:
        raise MedicError(f"{shown_path(root / 'dataset.json')}: 'labels' and 'modality' must map indices to names") from err
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        raise MedicError(f"{shown_path(root / 'dataset.json')} has no 'training' list of cases")
    cases = []
    for entry in training:
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise MedicError(f"{shown_path(root / 'dataset.json')}: each 'training' entry needs 'image' and 'label'")
        image, label = root / entry["image"], root / entry["label"]
        name = strip_ending(image.name)
        missing = [f"case {name}: {what} {shown_path(path)} is listed in dataset.json but missing on disk"
                   for what, path in (("image", image), ("label", label)) if not path.is_file()]
        problems.extend(missing)
        if not missing:
            cases.append(Case(name, [str(image)], str(label)))
    first = cases[0].images[0] if cases else ".nii.gz"
    return Layout("decathlon", root, cases, _consecutive(labels, root), modalities,
                  ".nii.gz" if first.endswith(".nii.gz") else Path(first).suffix)


def _nnunet(root: Path, meta: dict, problems: Problems) -> Layout:
    raw = meta.get("labels")
    if not isinstance(raw, dict):
        raise MedicError(f"{shown_path(root / 'dataset.json')}: 'labels' must map names to values")
    if "ignore" in raw:
        raise MedicError(f"{shown_path(root / 'dataset.json')}: the 'ignore' label is not supported yet")
    regions = [k for k, v in raw.items() if isinstance(v, (list, tuple))]
    if regions or "regions_class_order" in meta:
        raise MedicError(f"{shown_path(root / 'dataset.json')}: region-based labels ({', '.join(regions) or 'regions_class_order'}) "
                         f"are not supported yet")
    try:
        labels = {int(v): str(k) for k, v in raw.items()}
        channels = meta.get("channel_names") or {}
        modalities = [str(channels[k]) for k in sorted(channels, key=int)]
    except (ValueError, TypeError) as err:
        raise MedicError(f"{shown_path(root / 'dataset.json')}: label values and channel keys must be integers") from err
    if not modalities:
        raise MedicError(f"{shown_path(root / 'dataset.json')} has no 'channel_names'")
    ending = str(meta.get("file_ending", ".nii.gz"))
    names = sorted(p.name[: -len(ending)] for p in (root / "labelsTr").iterdir()
                   if p.name.endswith(ending) and not p.name.startswith("."))
    if not names:
        raise MedicError(f"{shown_path(root / 'labelsTr')} holds no {ending} files")
    cases = []
    for name in names:
        images = [root / "imagesTr" / f"{name}_{c:04d}{ending}" for c in range(len(modalities))]
        missing = [f"case {name}: channel {c:04d} ({modalities[c]}) is missing: {shown_path(path)}"
                   for c, path in enumerate(images) if not path.is_file()]
        problems.extend(missing)
        if not missing:
            cases.append(Case(name, [str(p) for p in images], str(root / "labelsTr" / f"{name}{ending}")))
    return Layout("nnunet", root, cases, _consecutive(labels, root), modalities, ending)


def _consecutive(labels: dict[int, str], root: Path) -> list[str]:
    values = sorted(labels)
    if values != list(range(len(values))) or len(values) < 2:
        raise MedicError(f"{shown_path(root / 'dataset.json')}: label values must be 0, 1, ... consecutively (with "
                         f"background at 0), got {values}")
    return [labels[v] for v in values]


def strip_ending(name: str) -> str:
    for ending in sorted(ENDINGS, key=len, reverse=True):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def header(path: str, case: str) -> tuple[tuple[int, ...], object]:
    """(shape, affine or None) from a file's header; NIfTI via nibabel, NRRD via pynrrd, pictures
    via Pillow. Other formats: (empty shape, None), checked when read."""
    import numpy as np
    name = path.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib
            img = nib.load(path)
            return tuple(int(v) for v in img.shape), np.asarray(img.affine)
        if name.endswith(".nrrd"):
            import nrrd
            head = nrrd.read_header(path)
            return tuple(int(v) for v in head["sizes"]), None
        if name.endswith((".png", ".tif", ".tiff")):
            from PIL import Image
            with Image.open(path) as im:
                return (im.size[0], im.size[1]), None
    except Exception as err:  # any decoder failure means the same to the user
        raise MedicError(f"case {case}: cannot read {shown_path(path)} ({type(err).__name__}: {err})") from err
    return (), None


def read_label_values(path: str, case: str):
    import numpy as np
    try:
        if path.lower().endswith((".nii", ".nii.gz")):
            import nibabel as nib
            return np.unique(np.asarray(nib.load(path).dataobj))
        if path.lower().endswith(".nrrd"):
            import nrrd
            return np.unique(nrrd.read(path)[0])
    except Exception as err:
        raise MedicError(f"case {case}: cannot read {shown_path(path)} ({type(err).__name__}: {err})") from err
    return None


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def check_layout(layout: Layout, problems: Problems | None = None) -> Layout:
    """Every case's headers agree (image and label shape and affine, the channels) and its label
    holds only listed values; records each case's shape and voxel size in RAS axis order (empty
    for a case whose label cannot be read). Every problem goes to ``problems`` (raised at once,
    all of them, without it)."""
    own = Problems() if problems is None else problems
    n_labels = len(layout.label_names)
    for case in layout.cases:
        shape, affine, values = (), None, None
        try:
            shape, affine = header(case.label, case.name)
            shape = _spatial(shape)
            _check_images(layout, case, shape, affine)
        except MedicError as err:
            own.add(err)
        if shape:
            try:
                values = read_label_values(case.label, case.name)
            except MedicError as err:
                own.add(err)
        if values is not None:
            bad = [v for v in values.tolist() if v not in range(n_labels)]
            if bad:
                own.add(f"case {case.name}: label values {bad[:8]} are not in dataset.json's labels "
                        f"0..{n_labels - 1} ({', '.join(layout.label_names)})")
        ras_shape, ras_zoom = _in_ras(shape, affine)
        layout.shapes.append(ras_shape)
        layout.zooms.append(ras_zoom)
        layout.values.append(values.tolist() if values is not None else None)
    if problems is None:
        own.check(str(layout.root))
    return layout


def _check_images(layout: Layout, case: Case, label_shape: tuple[int, ...], label_affine) -> None:
    """A case's image files against its label's header: dimensions, channels, shape, affine."""
    import numpy as np
    n_channels = len(layout.modalities)
    if len(label_shape) > 3:
        raise MedicError(f"case {case.name}: label {Path(case.label).name} is {len(label_shape)}D "
                         f"{label_shape} where a 3D volume is expected")
    for path in case.images:
        shape, affine = header(path, case.name)
        shape = shape if layout.channels_last else _spatial(shape)
        if layout.channels_last:
            if len(shape) != len(label_shape) + 1 or shape[-1] != n_channels:
                raise MedicError(f"case {case.name}: image {Path(path).name} has shape {shape}; dataset.json "
                                 f"lists {n_channels} modalities, so a {len(label_shape) + 1}D image with "
                                 f"{n_channels} channels last is expected")
            shape = shape[:-1]
        elif len(shape) > len(label_shape) and shape:
            raise MedicError(f"case {case.name}: image {Path(path).name} is {len(shape)}D {shape} where a "
                             f"{len(label_shape)}D volume is expected (dataset.json lists "
                             f"{n_channels} channel{'s' if n_channels > 1 else ''})")
        if shape and label_shape and shape != label_shape:
            raise MedicError(f"case {case.name}: image {Path(path).name} {shape} and label "
                             f"{Path(case.label).name} {label_shape} differ in shape")
        if affine is not None and label_affine is not None and not np.allclose(affine, label_affine, atol=1e-3):
            raise MedicError(f"case {case.name}: image {Path(path).name} and label {Path(case.label).name} "
                             f"have different affines (positions in space)")


def _in_ras(shape: tuple[int, ...], affine) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The shape and voxel size after reorienting to RAS (MONAI's ``Orientationd``)."""
    import numpy as np
    if affine is None or len(shape) != 3:
        return tuple(shape), tuple(1.0 for _ in shape)
    import nibabel as nib
    ornt = nib.orientations.io_orientation(affine)
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    out_shape, out_zoom = [0] * 3, [0.0] * 3
    for axis, (target, _) in enumerate(ornt):
        out_shape[int(target)], out_zoom[int(target)] = shape[axis], float(zooms[axis])
    return tuple(out_shape), tuple(out_zoom)


def resampled_shapes(layout: Layout, spacing: list[float]) -> list[tuple[int, ...]]:
    if not spacing:
        return list(layout.shapes)
    return [tuple(max(1, int(round(s * z / sp))) for s, z, sp in zip(shape, zoom, spacing))
            for shape, zoom in zip(layout.shapes, layout.zooms)]


def default_patch(shapes: list[tuple[int, ...]]) -> list[int]:
    """Per axis, the largest multiple of 16 not above min(96, the smallest volume's size); on an
    axis shorter than 16, the largest multiple of 8 (the default UNet halves a patch 3 times)."""
    shapes = [s for s in shapes if s]  # a case that could not be read has no shape
    smallest = [min(s[a] for s in shapes) for a in range(len(shapes[0]))]
    return [min(MAX_PATCH, v) // 16 * 16 if v >= 16 else max(8, v // 8 * 8) for v in smallest]


def plan_volumes(cfg, explicit: set[str] | None = None, problems: Problems | None = None) -> Layout | None:
    """Check a Decathlon or nnU-Net data set and settle the options it decides: ``num_classes``
    (from dataset.json; an explicit different value is an error), ``spatial_dims`` (auto: 3 when
    the volumes have more than one slice) and ``patch_size`` (default: ``default_patch``). With
    any other data, ``spatial_dims`` auto means 2. Changes ``cfg`` in place. Every problem goes
    to ``problems``; without it they are raised together at the end."""
    if not cfg.data or not is_layout(cfg.data):
        if cfg.data and cfg.spatial_dims == "3":
            raise MedicError("--spatial_dims 3 needs volumes in the Decathlon or nnU-Net layout "
                             "(imagesTr/, labelsTr/, dataset.json); an images/ + masks/ folder is 2D")
        cfg.spatial_dims = "2" if cfg.spatial_dims == "auto" else cfg.spatial_dims
        return None
    own = Problems() if problems is None else problems
    layout = check_layout(read_layout(cfg.data, own), own)
    _settle(cfg, layout, explicit, own)
    if problems is None:
        own.check(f"data folder {shown_path(cfg.data)}")
    return layout


def _settle(cfg, layout: Layout, explicit: set[str] | None, problems: Problems) -> None:
    n = len(layout.label_names)
    given = "num_classes" in explicit if explicit is not None else cfg.num_classes != 2
    if given and cfg.num_classes != n:
        problems.add(f"--num_classes {cfg.num_classes} disagrees with dataset.json, which lists {n} labels "
                     f"({', '.join(layout.label_names)})")
    cfg.num_classes = n
    dims = 3 if any(len(s) == 3 and s[2] > 1 for s in layout.shapes) else 2
    if cfg.spatial_dims != "auto" and int(cfg.spatial_dims) != dims:
        problems.add(f"--spatial_dims {cfg.spatial_dims}: the volumes of {cfg.data} are {dims}D")
        return
    cfg.spatial_dims = str(dims)
    spacing = [float(v) for v in cfg.spacing.split()]
    if spacing and len(spacing) != dims:
        problems.add(f"--spacing {cfg.spacing}: give {dims} values for {dims}D volumes")
        return
    shapes = [s[:dims] for s in resampled_shapes(layout, spacing)]
    if not any(shapes):
        return
    patch = cfg.patch or default_patch(shapes)
    if len(patch) != dims:
        problems.add(f"--patch_size {cfg.patch_size}: give {dims} sizes for {dims}D volumes")
        return
    small = [(case.name, shape) for case, shape in zip(layout.cases, shapes)
             if shape and any(p > s for p, s in zip(patch, shape))]
    where = f"RAS order{', after resampling' if spacing else ''}"
    sizes = [f"case {name} {' x '.join(map(str, shape))}" for name, shape in small[:5]]
    if len(small) == 1:
        problems.add(f"case {small[0][0]}: --patch_size {' '.join(map(str, patch))} is larger than the volume "
                     f"{' x '.join(map(str, small[0][1]))} ({where}); give a smaller --patch_size (volumes are not padded)")
    elif small:  # one line for one cause, however many cases it touches
        problems.add(f"--patch_size {' '.join(map(str, patch))} is larger than {len(small)} volumes ({where}): "
                     f"{', '.join(sizes)}{', ...' if len(small) > 5 else ''}; give a smaller --patch_size "
                     f"(volumes are not padded)")
    cfg.patch_size = " ".join(map(str, patch))
    if cfg.normalize == "auto":
        cfg.normalize = "ct" if layout.is_ct else "zscore"
