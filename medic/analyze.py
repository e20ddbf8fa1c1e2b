"""``python -m medic.analyze`` = ``medic analyze`` (where the usual
``analyze_training.py`` script would be); the command itself is ``medic.commands.analyze``."""

import sys

from medic.cli import run_main
from medic.commands.analyze import main

if __name__ == "__main__":
    sys.exit(run_main(main))
