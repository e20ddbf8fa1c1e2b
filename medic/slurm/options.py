"""Where ``medic train --launcher slurm`` runs: the options sent to ``sbatch``, as one dataclass
(``SlurmOptions``) that the flags of ``medic train`` and the ``slurm`` parameter of a notebook or of
``medic.launch`` derive from. They are the launcher's: they never reach the trainer's config or a
checkpoint."""

from __future__ import annotations

import argparse
import difflib
from dataclasses import asdict, dataclass, fields
from typing import Any

from medic.config import TrainConfig, _type_of, opt, parse_values
from medic.errors import MedicError


@dataclass
class SlurmOptions:
    """Where and how ``medic train --launcher slurm`` runs: the request sent to ``sbatch``.
    Launcher options (``launcher=True``): they never reach the trainer's config or a checkpoint."""

    launcher: str = opt("local", "'local': start the processes here; 'slurm': submit a batch job with sbatch "
                                 "and return once SLURM accepts it", ("local", "slurm"), launcher=True)
    # the allocation
    nodes: int = opt(1, "nodes of the SLURM job (one task per node starts the node's processes)", launcher=True)
    gpus_per_node: int = opt(0, "GPUs per node (--gpus-per-node); --nproc_per_node defaults to it", launcher=True)
    partition: str = opt("", "SLURM partition (default: the cluster's)", launcher=True)
    time: str = opt("", "time limit, passed to SLURM as it is: 10:00 means ten minutes there, "
                        "1-00:00:00 one day (default: the partition's)", launcher=True)
    # who pays, and how urgently
    account: str = opt("", "SLURM account to charge", launcher=True)
    qos: str = opt("", "SLURM quality of service", launcher=True)
    # per node
    mem: str = opt("", "memory per node, as SLURM writes it (64G)", launcher=True)
    cpus_per_task: int = opt(0, "CPUs for each node's task (0 = SLURM's default)", launcher=True)
    # anything else sbatch or the nodes need
    slurm_args: str = opt("", "any other sbatch options, in one string: --slurm_args=\"--exclusive --constraint=a100\" "
                              "(with '=', so that the value is not read as a flag)", launcher=True)
    slurm_setup: str = opt("", "shell lines run on the node before training (\"module load cuda/12.4\")", launcher=True)
    # time limits and preemption
    requeue_grace: int = opt(120, "seconds before the time limit at which SLURM warns the job: it then saves "
                                  "a checkpoint and requeues itself", launcher=True)
    max_requeues: int = opt(5, "requeues (time limit or preemption) after which the run ends as 'timeout'", launcher=True)
    dry_run: bool = opt(False, "print the batch script and submit nothing", launcher=True)

    def validate(self, explicit: set[str] = frozenset()) -> "SlurmOptions":
        """Check every value; options of SLURM without ``--launcher slurm`` are an error."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, _type_of(f)) or (_type_of(f) is int and isinstance(value, bool)):
                raise MedicError(f"option {f.name} must be {_type_of(f).__name__}, got {value!r}")
            if f.metadata.get("choices") and value not in f.metadata["choices"]:
                raise MedicError(f"option {f.name} must be 'local' or 'slurm', got {value!r}")
        if self.launcher != "slurm":
            if self.nodes > 1:
                raise MedicError(f"--nodes {self.nodes} needs --launcher slurm (without SLURM, start "
                                 "`medic train --nnodes N --node_rank I ...` on each machine)")
            given = [f.name for f in fields(self) if f.name != "launcher"
                     and (f.name in explicit or getattr(self, f.name) != f.default)]
            if given:
                raise MedicError(f"--{given[0]} is an option of --launcher slurm")
        for name in ("nodes",):
            if getattr(self, name) < 1:
                raise MedicError(f"option {name} must be >= 1, got {getattr(self, name)}")
        for name in ("gpus_per_node", "cpus_per_task", "requeue_grace", "max_requeues"):
            if getattr(self, name) < 0:
                raise MedicError(f"option {name} must be >= 0, got {getattr(self, name)}")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SlurmOptions":
        """From a mapping (a notebook's ``slurm`` parameter); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = [k for k in values if k not in names]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], names, n=1)
            raise MedicError(f"unknown SLURM option {unknown[0]!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
        return cls(**values).validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_args(self) -> list[str]:
        """The ``medic train`` flags of these options (only values that differ from the default)."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                # --name=value: a value such as "--exclusive" must not read as a flag of its own
                args.append(f"--{f.name}" if value is True else f"--{f.name}={value}")
        return args


def add_slurm_flags(parser: argparse.ArgumentParser) -> None:
    """The ``SlurmOptions`` flags, in their own group of ``medic train --help``."""
    group = parser.add_argument_group("SLURM (--launcher slurm)")
    for f in fields(SlurmOptions):
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        help_text = f.metadata["help"] + (f" (default: {f.default!r})" if f.default not in ("", False, 0) else "")
        if _type_of(f) is bool:
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            group.add_argument(*flags, type=_type_of(f), default=f.default, help=help_text,
                               choices=f.metadata.get("choices"), metavar=f.name.upper())


def parse_train_args(argv: list[str] | None) -> tuple[TrainConfig, SlurmOptions, list[str]]:
    """``medic train``'s flags: the training config, where it runs, and torchrun's own flags."""
    values, torchrun_flags = parse_values(argv, "medic train", add_slurm_flags)
    names = {f.name for f in fields(SlurmOptions)}
    typed = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv or [] if a.startswith("--")}
    slurm = SlurmOptions(**{k: values.pop(k) for k in names}).validate(typed & names)
    return TrainConfig(**values).validate(), slurm, torchrun_flags
