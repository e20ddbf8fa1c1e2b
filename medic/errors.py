"""The one exception base of medic.

A ``MedicError`` is a mistake of input or environment that the user can fix; the CLI prints its
message as one line and exits non-zero. Anything else escaping a command is a bug and keeps its
traceback.
"""

import difflib


class MedicError(Exception):
    """A problem the user can fix; the message says what and, where possible, how."""


class DataFileError(MedicError):
    """A metrics CSV or sidecar is missing, empty or malformed."""


class RunNotFoundError(MedicError):
    """A run id, file or checkpoint named by the user does not exist."""


def did_you_mean(flag: str, known) -> str:
    """``did you mean --epochs?`` for a mistyped or abbreviated flag (empty when nothing is close).
    Dashes and underscores are compared alike; a flag that starts a known one suggests it."""
    typed = flag.split("=")[0].lstrip("-").replace("-", "_")
    names = {k.lstrip("-").replace("-", "_"): k for k in known if k.startswith("--")}
    starts = sorted(n for n in names if n.startswith(typed)) if len(typed) >= 2 else []
    close = starts[:1] or difflib.get_close_matches(typed, list(names), n=1)
    return f"did you mean --{close[0]}?" if close else ""
