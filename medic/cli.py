"""The ``medic`` command: parse, call, print. Each subcommand lives in its own module and is
imported only when used, so ``medic analyze`` and ``medic watch`` never import torch."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("medic.train", "train a model with DDP (CPU gloo or CUDA nccl), logging metrics to CSV"),
    "analyze": ("medic.analyze", "figures and a text report for a run's epoch or batch CSV"),
    "compare": ("medic.compare", "overlay the curves of several runs and tabulate them"),
    "watch": ("medic.watch", "follow a run's epoch CSV live in the terminal"),
    "runs": ("medic.catalog", "list every run in the project"),
    "clean": ("medic.clean", "remove whole runs (CSVs, sidecar, log, checkpoints, analysis)"),
    "stop": ("medic.launcher", "stop a running training job by run id"),
}


def usage() -> str:
    lines = ["usage: medic COMMAND [options]   (medic COMMAND --help for a command's options)", "",
             "commands:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def run_main(main, argv=None) -> int:
    """Call a command's ``main``; a ``MedicError`` becomes one line on stderr and exit code 2."""
    from medic.errors import MedicError
    try:
        return main(argv) or 0
    except MedicError as err:
        print(f"medic: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medic: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from medic import __version__
        print(f"medic {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"medic: error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    entry = getattr(module, "stop_main" if name == "stop" else "main")
    return run_main(entry, rest)


if __name__ == "__main__":
    sys.exit(main())
