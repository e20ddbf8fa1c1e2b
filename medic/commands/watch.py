"""``medic watch``: follow a run's epoch CSV in the terminal, one line per finished epoch.

    medic watch                      # the newest run; switches when a newer run starts
    medic watch --run 20251106_103015 --interval 2
    medic watch --once               # print what is there and exit

The following itself is ``medic.live.follow``; this command parses, calls it and prints. Exits 0
once the run has ended (completed, failed, stopped, or interrupted: its process is gone) and no
rows are left to print, or on Ctrl-C. Standard library only: starts fast.
"""

from __future__ import annotations

import signal
import threading

from medic.cli import ArgParser, add_source_options, parse_source_args
from medic.errors import MedicError
from medic.lang import pick_lang
from medic.live.follow import TEXT, follow
from medic.store.paths import Project


def build_parser() -> ArgParser:
    parser = ArgParser(prog="medic watch", description="Follow a run's epoch CSV as it grows.")
    add_source_options(parser, "language")  # without --run: the newest, switching to newer runs
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
    parser.add_argument("--once", action="store_true", help="print what is there now and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_source_args(build_parser(), argv)
    if not args.interval > 0:
        raise MedicError(f"--interval must be > 0 seconds, got {args.interval}")
    lang = pick_lang(args.lang)
    restore = _ctrl_c_stops()
    try:
        return follow(Project.at(args.root), lang, run=args.run, metrics_file=args.metrics_file,
                      interval=args.interval, once=args.once)
    except KeyboardInterrupt:
        print("\n" + TEXT[lang]["bye"], flush=True)
        return 0
    finally:
        restore()


def _ctrl_c_stops():
    """Ctrl-C (SIGINT) is how a watch is stopped, so it must work even when the process started
    with SIGINT ignored — as every background job of a shell script does, and what it starts. Returns
    the function that puts the inherited setting back."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        return lambda: None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
