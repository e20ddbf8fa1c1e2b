"""Every training option, in one dataclass. The CLI flags, the notebook parameters and the run
sidecar all derive from ``TrainConfig``; nothing is declared twice.

Flags use underscore spellings (``--log_batch_metrics``); dashed aliases work too. Every option
explained, in the sections of ``--help`` (``group``): docs/reference/train-options.md, which
docs/gen_options.py writes from this dataclass.
"""

from __future__ import annotations

import argparse
import difflib
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from medic.errors import MedicError, did_you_mean
from medic.store.columns import AVG_LOSS, direction


def opt(default, help: str, choices: tuple | None = None, launcher: bool = False, alias: str = "",
        multi: bool = False, group: str = ""):
    # multi: the flag takes several space-separated values, kept as one space-separated string;
    # group: the section of `medic train --help` and of the options reference (a key of GROUPS)
    return field(default=default, metadata={"help": help, "choices": choices, "launcher": launcher,
                                            "alias": alias, "multi": multi, "group": group})


# the sections of `medic train --help` and docs/reference/train-options.md, in this order
GROUPS = {
    "data": "data",
    "model": "model and optimisation",
    "validation": "validation and the best model",
    "logging": "logging",
    "checkpoints": "checkpoints",
    "processes": "processes and cluster",
    "demo": "built-in demo data",
}


def group_of(f) -> str:
    """A field's group key; a launcher option without one belongs to the processes."""
    return f.metadata.get("group") or ("processes" if f.metadata.get("launcher") else "model")


def default_text(f) -> str:
    """The default as help and the options reference show it."""
    if isinstance(f.default, bool):
        return "on" if f.default else "off"
    return "empty" if f.default == "" else str(f.default)


@dataclass
class TrainConfig:
    # schedule
    epochs: int = opt(200, "number of epochs to train", group="model")
    batch_size: int = opt(4, "batch size per process (per GPU)", group="model")
    lr: float = opt(0.001, "learning rate of Adam", group="model")
    lr_scheduler: str = opt("none", "learning-rate schedule", ("none", "cosine", "step", "plateau"), group="model")
    lr_step_size: int = opt(30, "epochs between decays of the 'step' schedule", group="model")
    lr_gamma: float = opt(0.1, "decay factor of the 'step' and 'plateau' schedules", group="model")
    seed: int = opt(0, "random seed: data split, shuffling and weights are reproducible", group="model")
    # data and model
    num_samples: int = opt(684, "size of the built-in synthetic data set", group="demo")
    image_size: int = opt(64, "images are (resized to) image_size x image_size pixels", group="data")
    num_classes: int = opt(2, "segmentation classes including background", group="model")
    data: str = opt("", "a data set folder in one of three layouts: 2D images/ and masks/ of matching "
                        "file names (PNG, JPEG, TIFF, NPY, NIfTI); a Medical Segmentation Decathlon task "
                        "(dataset.json, imagesTr/, labelsTr/); an nnU-Net v2 raw data set (dataset.json, "
                        "imagesTr/<case>_0000.nii.gz, labelsTr/); empty = built-in synthetic data (recorded as an "
                        "absolute path)", group="data")
    dataset: str = opt("", "plug-in 'pkg.module:function' or 'path/to/file.py:function' taking the config, "
                           "returning a Dataset of (image, mask) tensors", group="data")
    model: str = opt("", "plug-in 'pkg.module:function' or 'path/to/file.py:function' taking the config, "
                         "returning an nn.Module", group="model")
    val_fraction: float = opt(0.0, "fraction of the data held out for validation (0 = none)", group="validation")
    # k-fold cross-validation (medic.train.data.splits): validate fold i, train on the others
    folds: int = opt(0, "K-fold cross-validation: the number of folds (0 = none; from --splits when given)",
                     group="validation")
    fold: int = opt(-1, "the fold to validate, 0-based; -1 = none ('medic train --fold all [--slots N]': "
                        "every fold, as a sweep, then the cross-validation's summary)", group="validation")
    splits: str = opt("", "an nnU-Net splits_final.json of the folds (default: the data set's own, when present)",
                      group="validation")
    cv_epoch: str = opt("last", "--fold all: the summary's epoch of each fold (best is chosen on the same cases)",
                        ("last", "best"), launcher=True, group="validation")
    monitor: str = opt(AVG_LOSS, "metric that decides the best model: Avg_Loss, Val_Loss, Val_Dice or any "
                                   "recorded column such as Val_Dice_<class> (Dice and NSD are maximised)",
                       # torchrun's own parser reads --monitor as an abbreviation of its
                       # --monitor-interval, so under torchrun spell it --monitor_metric
                       alias="monitor_metric", group="validation")
    num_workers: int = opt(0, "DataLoader worker processes per training process", group="data")
    # logging and checkpoints
    log_interval: int = opt(10, "print a progress line every N batches", group="logging")
    log_batch_metrics: bool = opt(False, "also write every batch's loss to the batch CSV", group="logging")
    save_interval: int = opt(10, "save model_epoch_N.pth every N epochs", group="checkpoints")
    output_dir: str = opt("", "project root for metrics/, log/, checkpoints/, results/ "
                              "(empty = the working directory)", group="logging")
    resume: str = opt("", "continue a run: 'latest', a run id, or a checkpoint path", group="checkpoints")
    lang: str = opt("", "console language, 'en' or 'zh' (empty = from the locale)", ("", "en", "zh"), group="logging")
    nonfinite: str = opt("stop", "on a NaN/Inf loss: 'stop' the run or 'skip' the batch",
                         ("stop", "skip"), group="model")
    # hardware
    device: str = opt("auto", "'auto' (CUDA when available), 'cpu' or 'cuda'", ("auto", "cpu", "cuda"), group="processes")
    amp: bool = opt(False, "bf16 autocast (CUDA)", group="model")
    channels_last: bool = opt(False, "channels-last memory format", group="model")
    dist_timeout: float = opt(300.0, "seconds a collective may wait before the job is failed", group="processes")
    # launcher only (medic train starts torchrun itself when nproc_per_node > 1 or nnodes > 1)
    nproc_per_node: int = opt(1, "processes to start on this machine (torchrun)", launcher=True, group="processes")
    threads: int = opt(0, "OMP/torch threads per process (0 = cores / processes)", launcher=True, group="processes")
    # segmentation metrics, model selection and early stopping
    val_metrics: str = opt("dice", "per-class validation metrics, comma-separated: dice, hd95, nsd", group="validation")
    nsd_tolerance: float = opt(1.0, "NSD tolerance, in mm (pixels when the data has no spacing)", group="validation")
    monitor_mode: str = opt("auto", "'min' or 'max' the monitor; 'auto': Dice and NSD max, losses and HD95 min",
                            ("auto", "min", "max"), group="validation")
    monitor_ema: float = opt(0.0, "select on an EMA of the monitor, A*previous + (1-A)*new (0 = off; nnU-Net: 0.9)", group="validation")
    save_top_k: int = opt(0, "keep the K best checkpoints in checkpoints/<id>/top_k/ (0 = none)", group="checkpoints")
    patience: int = opt(0, "stop after N validations without improvement of the monitor (0 = never)", group="validation")
    min_delta: float = opt(0.0, "smallest change of the monitor that counts as an improvement (--patience)", group="validation")
    # 3D volumes: Decathlon / nnU-Net layouts, patch training, sliding-window validation
    spatial_dims: str = opt("auto", "2 or 3 spatial dimensions (auto = 3 when the volumes have more than "
                                    "one slice; 3 with built-in data = synthetic volumes)", ("auto", "2", "3"), group="data")
    patch_size: str = opt("", "training patch and sliding window, 2 or 3 ints (e.g. 96 96 64); empty = per "
                              "axis the largest multiple of 16 not above min(96, smallest volume)", multi=True, group="data")
    spacing: str = opt("", "resample volumes to this voxel spacing in mm (e.g. 1.5 1.5 2); empty = keep",
                       multi=True, group="data")
    normalize: str = opt("auto", "intensity normalisation: zscore on the foreground, ct window -175..250 HU, "
                                 "minmax; auto = ct for CT channels, else zscore", ("auto", "zscore", "ct", "minmax"), group="data")
    augment: bool = opt(True, "random flips, 90-degree rotations and intensity shifts of training patches", group="data")
    val_interval: int = opt(1, "validate every N epochs (other rows leave the validation columns empty)", group="validation")
    sw_overlap: float = opt(0.5, "overlap of the sliding windows of validation and prediction", group="validation")
    cache_rate: float = opt(1.0, "fraction of the preprocessed volumes kept in memory (the rest read lazily)", group="data")
    cache_dir: str = opt("", "keep the preprocessed volumes on disk in this folder instead of in memory "
                             "(shared by the ranks and by later runs)", group="data")

    def validate(self) -> "TrainConfig":
        """Check every value; raise ``MedicError`` naming the first bad one. Paths become absolute
        (``resolve_paths``)."""
        self.resolve_paths()
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _type_of(f)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise MedicError(f"option {f.name} must be {kind.__name__}, got {value!r}")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise MedicError(f"option {f.name} must be one of {', '.join(repr(c) for c in choices)}, "
                                 f"got {value!r}")
        positive = ("epochs", "batch_size", "log_interval", "save_interval", "num_samples",
                    "image_size", "nproc_per_node", "lr_step_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise MedicError(f"option {name} must be > 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise MedicError(f"option lr must be > 0, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise MedicError(f"option val_fraction must be in [0, 1), got {self.val_fraction}")
        self.validate_folds()
        self.validate_selection()
        if self.monitor != AVG_LOSS and not self.validates:
            raise MedicError(f"monitor {self.monitor} needs validation: set val_fraction > 0 (or --folds)")
        if self.image_size < 16 or self.image_size % 16:
            raise MedicError(f"option image_size must be a multiple of 16 (>= 16), got {self.image_size}")
        if self.num_classes < 2:
            raise MedicError(f"option num_classes must be >= 2, got {self.num_classes}")
        for name in ("num_workers", "threads"):
            if getattr(self, name) < 0:
                raise MedicError(f"option {name} must be >= 0, got {getattr(self, name)}")
        if not self.dist_timeout > 0:
            raise MedicError(f"option dist_timeout must be > 0, got {self.dist_timeout}")
        for name in ("model", "dataset"):
            spec = getattr(self, name)
            where, _, function = spec.rpartition(":")
            if spec and not (where and function and (where.endswith(".py") or ":" not in where)):
                raise MedicError(f"option {name} must look like 'package.module:function' or "
                                 f"'path/to/file.py:function', got {spec!r}")
        if self.data and self.dataset:
            raise MedicError("give either data (a folder) or dataset (a plug-in), not both")
        self.check_volume_options()
        return self

    def resolve_paths(self) -> None:
        """``data``, ``cache_dir`` and a plug-in given as a file (``models/net.py:build``) as
        absolute paths: the run records where they are, not where they were seen from, so a
        resume works from any working folder and two runs on the same folder record the same
        value. Messages show them as typed again where that is shorter (``shown_path``)."""
        for name in PATH_OPTIONS:
            value = getattr(self, name)
            if value:
                setattr(self, name, os.path.abspath(os.path.expanduser(value)))
        for name in ("model", "dataset"):
            spec = getattr(self, name)
            where, _, function = spec.rpartition(":")
            if where.endswith(".py") and function:
                setattr(self, name, f"{os.path.abspath(os.path.expanduser(where))}:{function}")

    def validate_selection(self) -> None:
        """The per-class metrics, monitor, EMA, top-k and patience options."""
        asked = [m.strip() for m in self.val_metrics.split(",") if m.strip()]
        bad = [m for m in asked if m not in ("dice", "hd95", "nsd")]
        if bad or not asked:
            raise MedicError(f"option val_metrics must list dice, hd95 or nsd (comma-separated), got {self.val_metrics!r}")
        self.val_metrics = ",".join(m for m in ("dice", "hd95", "nsd") if m in asked or m == "dice")
        for name in ("save_top_k", "patience"):
            if getattr(self, name) < 0:
                raise MedicError(f"option {name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.monitor_ema < 1:
            raise MedicError(f"option monitor_ema must be in [0, 1), got {self.monitor_ema}")
        if not self.min_delta >= 0 or not self.nsd_tolerance > 0:
            raise MedicError("option min_delta must be >= 0 and nsd_tolerance > 0")
        if self.patience and not self.validates and self.monitor != AVG_LOSS:
            raise MedicError("--patience needs validation data (set val_fraction > 0), or --monitor Avg_Loss")

    def validate_folds(self) -> None:
        """--folds, --fold, --splits: a fold within range, and never with --val_fraction (which
        holds out another split)."""
        if self.folds < 0 or self.folds == 1:
            raise MedicError(f"option folds must be >= 2 (or 0: none), got {self.folds}")
        if self.fold < -1 or (self.folds and self.fold >= self.folds):
            raise MedicError(f"--fold {self.fold} is out of range: --folds {self.folds} has folds 0..{self.folds - 1}")
        if (self.folds or self.fold >= 0 or self.splits) and self.val_fraction > 0:
            raise MedicError("--folds/--fold/--splits choose the validation cases: leave out --val_fraction")

    @property
    def validates(self) -> bool:
        """Whether the run holds cases out for validation (a fraction, or a fold)."""
        return self.val_fraction > 0 or self.folds > 0 or self.fold >= 0 or bool(self.splits)

    def check_volume_options(self) -> None:
        """The 3D options: patch and spacing hold 2 or 3 positive numbers, the rest their ranges."""
        patch = self.patch
        if self.patch_size and not (patch and len(patch) in (2, 3) and all(v >= 8 for v in patch)):
            raise MedicError(f"option patch_size must be 2 or 3 integers >= 8 (e.g. 96 96 64), got {self.patch_size!r}")
        try:
            spacing = [float(v) for v in self.spacing.split()]
        except ValueError:
            spacing = []
        if self.spacing and not (len(spacing) in (2, 3) and all(v > 0 for v in spacing)):
            raise MedicError(f"option spacing must be 2 or 3 numbers > 0 (e.g. 1.5 1.5 2), got {self.spacing!r}")
        if self.val_interval <= 0:
            raise MedicError(f"option val_interval must be > 0, got {self.val_interval}")
        if not 0 <= self.sw_overlap < 1:
            raise MedicError(f"option sw_overlap must be in [0, 1), got {self.sw_overlap}")
        if not 0 <= self.cache_rate <= 1:
            raise MedicError(f"option cache_rate must be in [0, 1], got {self.cache_rate}")

    @property
    def patch(self) -> list[int]:
        """``patch_size`` as ints ([] when empty or not integers)."""
        try:
            return [int(v) for v in self.patch_size.split()]
        except ValueError:
            return []

    @property
    def monitor_direction(self) -> str:
        """``min`` or ``max``: ``monitor_mode``, or the registry's direction of the monitor when
        it is 'auto' (``medic.store.columns.direction``)."""
        return direction(self.monitor, self.monitor_mode)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], strict: bool = True) -> "TrainConfig":
        """Build a config from a mapping (notebook parameters, a sidecar); unknown keys are an
        error when ``strict`` (with a did-you-mean), ignored otherwise."""
        names = {f.name for f in fields(cls)}
        unknown = [k for k in values if k not in names]
        if unknown and strict:
            hint = difflib.get_close_matches(unknown[0], names, n=1)
            raise MedicError(f"unknown option {unknown[0]!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
        multi = {f.name for f in fields(cls) if f.metadata.get("multi")}  # [96, 96, 64] = "96 96 64"
        return cls(**{k: " ".join(map(str, v)) if k in multi and isinstance(v, (list, tuple)) else v
                      for k, v in values.items() if k in names}).validate()

    def to_args(self, include_launcher: bool = False, full: bool = False) -> list[str]:
        """The CLI flags that reproduce this config (only values that differ from the default,
        unless ``full``)."""
        args: list[str] = []
        for f in fields(self):
            if f.metadata.get("launcher") and not include_launcher and not full:
                continue
            value = getattr(self, f.name)
            if value == f.default and not full:
                continue
            name = f.metadata.get("alias") or f.name
            if isinstance(value, bool):
                args.append(f"--{name}" if value else f"--no-{name}")
            else:
                args += [f"--{name}", str(value)]
        return args


# options that name a file or folder: stored as absolute paths (TrainConfig.resolve_paths)
PATH_OPTIONS = ("data", "cache_dir")


def _type_of(f) -> type:
    return {"int": int, "float": float, "str": str, "bool": bool}[f.type if isinstance(f.type, str) else f.type.__name__]


# the value names of `medic train --help` (ints are N, floats X)
METAVARS = {"data": "PATH", "dataset": "MODULE:FUNCTION", "model": "MODULE:FUNCTION", "monitor": "COLUMN",
            "output_dir": "DIR", "resume": "latest|ID|PATH", "val_metrics": "LIST", "cache_dir": "DIR"}


def build_parser(prog: str = "medic train") -> argparse.ArgumentParser:
    # allow_abbrev=False: argparse would silently read --epoch as --epochs
    from medic.cli import HelpFormatter  # the commands' help style (cli imports no module of medic)

    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False, usage="%(prog)s [options]", formatter_class=HelpFormatter,
        description="Train a segmentation model with DDP and record its metrics.\n"
                    "Every flag also takes dashes (--log-batch-metrics).",
        epilog="Any other torchrun rendezvous flag (--nnodes, --node_rank, --rdzv_endpoint,\n"
               "--rdzv_backend, --rdzv_id, --master_addr, --master_port, --max_restarts) is passed\n"
               "to torchrun for multi-node runs. Every option explained: docs/reference/train-options.md")
    sections = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for f in fields(TrainConfig):
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        if f.metadata.get("alias"):
            flags.append(f"--{f.metadata['alias']}")
        kind = _type_of(f)
        choices = f.metadata.get("choices")
        metavar = None if choices else METAVARS.get(f.name, {int: "N", float: "X"}.get(kind, "TEXT"))
        also = f"; also --{f.metadata['alias']}" if f.metadata.get("alias") else ""
        help_text = f"{f.metadata['help']} (default: {default_text(f)}{also})".replace("%", "%%")
        section = sections[group_of(f)]
        if kind is bool:
            section.add_argument(*flags, action=argparse.BooleanOptionalAction, default=f.default,
                                 help=help_text)
        elif f.metadata.get("multi"):
            section.add_argument(*flags, nargs="+", default=f.default, help=help_text, metavar="X")
        else:
            section.add_argument(*flags, type=kind, default=f.default, help=help_text,
                                 choices=choices, metavar=metavar)
    return parser


def parse_args(argv: list[str] | None, prog: str = "medic train") -> tuple[TrainConfig, list[str]]:
    """Parse training flags; unknown ``--rdzv*``/``--nnodes``-style flags are returned for
    torchrun. A bad flag or value becomes a ``MedicError`` (one line, no usage dump)."""
    values, torchrun_flags = parse_values(argv, prog)
    return TrainConfig(**values).validate(), torchrun_flags


def parse_values(argv: list[str] | None, prog: str, extend=None) -> tuple[dict[str, Any], list[str]]:
    """The parsed flags as a dict, and torchrun's flags; ``extend(parser)`` adds more flags
    (``medic train``'s launcher options)."""
    parser = build_parser(prog)
    if extend is not None:
        extend(parser)
    parser.exit_on_error = False
    try:
        ns, rest = parser.parse_known_args(argv)
    except argparse.ArgumentError as err:
        raise MedicError(str(err)) from None
    torchrun_flags, bad = _split_torchrun_flags(rest)
    if bad:
        hint = did_you_mean(bad[0], parser._option_string_actions) if bad[0].startswith("-") else ""
        raise MedicError(f"unrecognized argument {bad[0].split('=')[0]!r}" + (f"; {hint}" if hint else ""))
    return {k: " ".join(v) if isinstance(v, list) else v for k, v in vars(ns).items()}, torchrun_flags


TORCHRUN_FLAGS = {"nnodes", "node_rank", "rdzv_endpoint", "rdzv_backend", "rdzv_id", "rdzv_conf",
                  "master_addr", "master_port", "max_restarts", "monitor_interval", "local_addr",
                  "standalone", "role"}


def _split_torchrun_flags(rest: list[str]) -> tuple[list[str], list[str]]:
    passed, bad, i = [], [], 0
    while i < len(rest):
        tok = rest[i]
        name = tok.split("=")[0].lstrip("-").replace("-", "_")
        if tok.startswith("--") and name in TORCHRUN_FLAGS:
            passed.append(tok)
            if "=" not in tok and name != "standalone" and i + 1 < len(rest):
                passed.append(rest[i + 1])
                i += 1
        else:
            bad.append(tok)
        i += 1
    return passed, bad

