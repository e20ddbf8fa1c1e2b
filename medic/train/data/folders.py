"""A folder of the user's images: ``images/`` and ``masks/`` with matching file names.

Checked before any worker starts (no torch needed): the folders exist, every image has a mask of
the same name (extensions may differ), and every file opens. Supported: PNG/JPEG/TIFF/BMP, NPY,
NIfTI (``.nii``, ``.nii.gz``); 2D, or 3D with a single slice.
"""

from __future__ import annotations

from pathlib import Path

from medic.errors import MedicError, Problems
from medic.store.files import shown_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy", ".nii", ".nii.gz")


def stem_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _index(folder: Path) -> dict[str, Path]:
    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            stem = stem_of(p)
            if stem is not None:
                files[stem] = p
    return files


def pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of a data folder; a ``MedicError`` says what is wrong with it."""
    root = Path(root)
    if not root.is_dir():
        raise MedicError(f"data folder {shown_path(root)} does not exist")
    images_dir, masks_dir = root / "images", root / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise MedicError(f"data folder {shown_path(root)} has no {d.name}/ subfolder (expected images/ and masks/)")
    images, masks = _index(images_dir), _index(masks_dir)
    if not images:
        raise MedicError(f"{shown_path(images_dir)} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise MedicError(f"{len(missing)} image(s) in {shown_path(images_dir)} have no mask of the same name in "
                         f"{shown_path(masks_dir)}, e.g. {images[missing[0]].name}")
    extra = sorted(set(masks) - set(images))
    if extra:
        raise MedicError(f"{len(extra)} mask(s) in {shown_path(masks_dir)} have no image of the same name, "
                         f"e.g. {masks[extra[0]].name}")
    return [(images[k], masks[k]) for k in sorted(images)]


def read_array(path: Path):
    """The file's pixels as a 2D (or HxWxC) numpy array; a ``MedicError`` when unreadable."""
    import numpy as np
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib
            arr = np.asarray(nib.load(str(path)).dataobj)
        else:
            from PIL import Image
            with Image.open(path) as im:
                arr = np.asarray(im)
    except Exception as err:  # any decoder failure means the same thing to the user
        raise MedicError(f"cannot read {shown_path(path)}: {type(err).__name__}: {err}") from err
    arr = np.squeeze(arr) if arr.ndim > 2 and 1 in arr.shape[2:] else arr
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and not name.endswith((".nii", ".nii.gz")):
        arr = arr[..., :3].mean(axis=-1)  # RGB(A) pictures become grey
    if arr.ndim != 2:
        raise MedicError(f"{shown_path(path)} has shape {arr.shape}; medic trains on 2D images (give 2D slices)")
    return arr


def check_folder(root: str | Path, problems: Problems | None = None) -> list[dict]:
    """Validate a data folder completely: one row per pair (case, shape, label values), every
    problem added to ``problems`` (without it, all of them raised together at the end)."""
    import numpy as np
    own = Problems() if problems is None else problems
    rows = []
    for image, mask in pairs(root):
        row = {"case": stem_of(image), "shape": (), "values": None}
        a = b = None
        for path, kind in ((image, "image"), (mask, "mask")):
            try:
                arr = read_array(path)
            except MedicError as err:
                own.add(f"case {row['case']}: {err}")
                continue
            if kind == "image":
                a, row["shape"] = arr, arr.shape
            else:
                b, row["values"] = arr, np.unique(arr).tolist()
        if a is not None and b is not None and a.shape != b.shape:
            own.add(f"case {row['case']}: image {image.name} {a.shape} and mask {mask.name} {b.shape} differ in size")
        rows.append(row)
    if problems is None:
        own.check(f"data folder {shown_path(root)}")
    return rows
