"""The ``medic`` command: parse, call, print. Each subcommand lives in its own module
(``medic/commands/``, and ``medic.train.launch.roles`` for training) and is imported only when used, so
``medic analyze`` and ``medic watch`` never import torch. The commands share the argument parser
below, which turns a bad flag into one line."""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from medic.errors import MedicError, did_you_mean

# the module of each command, imported by name when the command runs (never at start-up)
COMMANDS = {
    "train": ("medic.commands.train", "train a model with DDP (CPU gloo or CUDA nccl), logging metrics to CSV"),
    "analyze": ("medic.commands.analyze", "figures and a text report for a run's epoch or batch CSV"),
    "compare": ("medic.commands.compare", "overlay the curves of several runs and tabulate them"),
    "watch": ("medic.commands.watch", "follow a run's epoch CSV live in the terminal"),
    "runs": ("medic.commands.runs", "list every run in the project"),
    "clean": ("medic.commands.clean", "remove whole runs (CSVs, sidecar, log, checkpoints, analysis)"),
    "stop": ("medic.commands.stop", "stop a running training job by run id"),
    "export": ("medic.commands.export", "export runs to TensorBoard and MLflow (repeatable, incremental)"),
    "sweep": ("medic.commands.sweep", "many trainings of the training notebook: grid or Optuna search, resumable"),
    "predict": ("medic.commands.predict", "segment new volumes with a trained run's model"),
    "evaluate": ("medic.commands.evaluate", "score masks against labels with the validation metrics"),
    "check": ("medic.commands.check", "check a data set (every case at once) without training"),
}


class HelpFormatter(argparse.HelpFormatter):
    """The help of every command: one spelling per option, the first flag and its value
    (``--batch_size N``, ``--amp / --no-amp``; the dashed and other aliases still work but would
    double the page), every default shown, and descriptions wrapped line by line."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=30)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(super(HelpFormatter, self)._fill_text(line, width, indent) for line in text.splitlines())

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" not in text and action.default not in (None, False, "", [], argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        return {int: "N", float: "X"}.get(action.type, super()._get_default_metavar_for_optional(action))

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            return super()._format_action_invocation(action)
        first = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            return f"{first} / --no-{first[2:]}"
        if action.nargs == 0:
            return first
        return f"{first} {self._format_args(action, self._get_default_metavar_for_optional(action))}"


class ArgParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a ``MedicError``: one line, no usage dump, with a
    did-you-mean, and writes its help with ``HelpFormatter``. Prefixes are never guessed
    (``allow_abbrev=False``): argparse would silently read ``--epoch`` as ``--epochs``, and a
    prefix that a later flag makes ambiguous breaks scripts that worked."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            flags = [t for t in message.split(":", 1)[1].split() if t.startswith("-")]
            hint = did_you_mean(flags[0], self._option_string_actions) if flags else ""
            if hint:
                raise MedicError(f"{self.prog}: unrecognized argument {flags[0].split('=')[0]!r}; {hint}")
        raise MedicError(f"{self.prog}: {message}")



def add_root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_dir", "--output-dir", "--root", dest="root", default=None,
                        metavar="DIR", help="project root holding metrics/ and analysis/ "
                                            "(default: the working directory)")



def add_source_options(parser: argparse.ArgumentParser, lang_help: str) -> None:
    """The run to read (``--run`` or ``--metrics_file``), the project root, and ``--lang``."""
    parser.add_argument("--metrics_file", "--metrics-file", metavar="PATH",
                        help="the CSV to read (default: the newest run's in metrics/)")
    parser.add_argument("--run", metavar="ID", help="the run (YYYYmmdd_HHMMSS, or latest)")
    add_root_option(parser)
    parser.add_argument("--lang", choices=("en", "zh"), default=None,
                        help=f"{lang_help} (default: from the locale, zh* -> Chinese)")


def parse_source_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.metrics_file and args.run:
        raise MedicError("give either --metrics_file or --run, not both")
    return args


def usage() -> str:
    lines = ["usage: medic COMMAND [options]   (medic COMMAND --help for a command's options)", "",
             "commands:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def run_main(main, argv=None) -> int:
    """Call a command's ``main``; a ``MedicError`` becomes one line on stderr and exit code 2."""
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
        close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"commands: {', '.join(COMMANDS)}"
        print(f"medic: error: unknown command {name!r}; {hint} (medic --help lists them)", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return run_main(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
