"""MkDocs hook: fills docs/reference/commands.md with every command's ``--help``, taken from the
code at build time, so the page lists exactly the commands and options the checkout has."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- medic commands help -->"


def command_help(name: str) -> str:
    from medic import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        cli.main([name, "--help"])
    return out.getvalue().rstrip()


def render() -> str:
    sys.path.insert(0, str(ROOT))
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: the page has a fixed one
    from medic import cli

    parts = []
    for name, (_, text) in cli.COMMANDS.items():
        parts += [f"## medic {name}", "", f"{text[0].upper()}{text[1:]}.", "", "```text", command_help(name), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
