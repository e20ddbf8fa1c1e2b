"""Which cases a run validates: a seeded fraction (``--val_fraction``) or one fold of K
(``--folds K --fold i``), from a ``splits_final.json`` or made here. No torch: the launcher
checks a split before any worker starts.

    a given split     ``--splits PATH``, else ``<data>/splits_final.json`` when the run asks
                      for folds: nnU-Net's file, a list of {"train": [...], "val": [...]} by
                      case name; fold i is its i-th entry
    nnU-Net, K = 5    nnU-Net's own split, so that fold i is nnU-Net's fold i: its case names
                      sorted (``np.sort``), then ``KFold(5, shuffle=True, random_state=12345)``
                      (``nnunetv2/utilities/crossval_split.py``, called from
                      ``nnUNetTrainer.do_split``)
    otherwise         the case names sorted (the built-in data: by index), then the same KFold
                      scheme seeded by ``--seed``: a permutation cut into K folds, the first
                      ``n % K`` folds one case larger

``kfold`` is scikit-learn's ``KFold(k, shuffle=True, random_state=seed).split`` written out
(numpy's ``RandomState(seed).shuffle``), so medic needs no scikit-learn; a test checks the two
against each other.
"""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path

import numpy as np

from medic.errors import MedicError

NNUNET_SEED, NNUNET_FOLDS = 12345, 5
SPLITS_FILE = "splits_final.json"


def kfold(n: int, k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(train, val) positions of each fold: ``sklearn.model_selection.KFold(k, shuffle=True,
    random_state=seed).split(range(n))``: each fold's positions ascending, as scikit-learn gives them."""
    if n < k:
        raise MedicError(f"{k} folds need at least {k} cases; the data set has {n}")
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    out, start = [], 0
    for size in sizes:
        val = order[start:start + size]
        held = np.zeros(n, dtype=bool)
        held[val] = True
        out.append((np.flatnonzero(~held).tolist(), np.flatnonzero(held).tolist()))
        start += size
    return out


def sorted_names(names: list[str]) -> list[str]:
    """Case names in split order: as text (``np.sort``), or by number when all are indices."""
    if names and all(n.isdigit() for n in names):
        return sorted(names, key=int)
    return [str(n) for n in np.sort(np.asarray(names, dtype=str))]


def generate_splits(names: list[str], k: int, seed: int) -> list[dict[str, list[str]]]:
    """Folds as nnU-Net writes them: ``[{"train": [names], "val": [names]}, ...]``."""
    keys = sorted_names(names)
    return [{"train": [keys[i] for i in tr], "val": [keys[i] for i in va]} for tr, va in kfold(len(keys), k, seed)]


def read_splits(path: str | Path) -> list[dict[str, list[str]]]:
    """An nnU-Net ``splits_final.json``, checked for its shape."""
    path = Path(path)
    data = None
    with suppress(OSError, ValueError):
        data = json.loads(path.read_text(encoding="utf-8"))
    if data is None:
        raise MedicError(f"--splits {path} cannot be read as JSON")
    if not isinstance(data, list) or not data or not all(
            isinstance(f, dict) and isinstance(f.get("train"), list) and isinstance(f.get("val"), list) for f in data):
        raise MedicError(f"--splits {path} is not a list of {{\"train\": [...], \"val\": [...]}} folds")
    return data


def splits_path(cfg) -> Path | None:
    """The split file a fold run uses: ``--splits``, else the data set's own ``splits_final.json``."""
    if cfg.splits:
        return Path(cfg.splits)
    if cfg.data and (cfg.folds or cfg.fold >= 0) and (Path(cfg.data) / SPLITS_FILE).is_file():
        return Path(cfg.data) / SPLITS_FILE
    return None


def uses_folds(cfg) -> bool:
    return bool(cfg.folds or cfg.fold >= 0 or cfg.splits)


def fold_count(cfg) -> int:
    """K: ``--folds``, which must agree with a split file's folds; else the file's."""
    path = splits_path(cfg)
    if path is None:
        if not cfg.folds:
            raise MedicError("--fold needs --folds K (or --splits splits_final.json)")
        return cfg.folds
    n = len(read_splits(path))
    if cfg.folds and cfg.folds != n:
        raise MedicError(f"--folds {cfg.folds} disagrees with {path}, which holds {n} folds")
    return n


def fold_cases(cfg, names: list[str], kind: str = "") -> tuple[list[int], list[int]]:
    """The training and validation positions (in ``names``' order, ascending) of fold
    ``cfg.fold``. ``kind`` "nnunet" with K = 5 gives nnU-Net's split."""
    k = fold_count(cfg)
    if not 0 <= cfg.fold < k:
        raise MedicError(f"--fold {cfg.fold} is out of range: {k} folds, 0..{k - 1}" if cfg.fold >= 0 else
                         f"--folds {k}: choose the fold to validate with --fold i (0..{k - 1}), or --fold all")
    path = splits_path(cfg)
    if path is not None:
        split = read_splits(path)[cfg.fold]
    else:
        seed = NNUNET_SEED if kind == "nnunet" and k == NNUNET_FOLDS else cfg.seed
        split = generate_splits(names, k, seed)[cfg.fold]
    return positions(split["train"], names, path), positions(split["val"], names, path)


def positions(wanted: list[str], names: list[str], path: Path | None) -> list[int]:
    """The positions of the named cases (a name may leave out its file ending)."""
    from medic.train.data.layouts import strip_ending
    index = {n: i for i, n in enumerate(names)}
    index.update({strip_ending(n): i for i, n in enumerate(names) if strip_ending(n) not in index})
    missing = [str(w) for w in wanted if str(w) not in index]
    if missing:
        raise MedicError(f"{path}: case {missing[0]} is not in the data set "
                         f"({len(missing)} of its cases are not; e.g. the data set has {names[0]})")
    return sorted(index[str(w)] for w in wanted)


def data_case_names(cfg) -> tuple[list[str], str] | None:
    """The case names of the run's data and the layout's kind, before any worker starts (None
    for a plug-in data set, known only once it is built)."""
    if cfg.dataset:
        return None
    if not cfg.data:
        return [str(i) for i in range(cfg.num_samples)], ""
    from medic.train.data.layouts import is_layout, read_layout
    if is_layout(cfg.data):
        layout = read_layout(cfg.data)
        return [c.name for c in layout.cases], layout.kind
    from medic.train.data.folders import pairs
    return [image.name for image, _ in pairs(cfg.data)], ""


def check_folds(cfg) -> None:
    """Refuse a bad fold before the start: out of range, or a split naming unknown cases; settle
    ``cfg.folds`` and ``cfg.splits`` (a data set's own file, by its full path)."""
    if not uses_folds(cfg):
        return
    path = splits_path(cfg)
    cfg.folds = fold_count(cfg)  # the run's record names K and the file, also when found in the data
    if path is not None:
        cfg.splits = str(path.resolve())
    found = data_case_names(cfg)
    if found is not None:
        fold_cases(cfg, *found)
