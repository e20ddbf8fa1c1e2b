"""The one exception base of medic.

A ``MedicError`` is a mistake of input or environment that the user can fix; the CLI prints its
message as one line and exits non-zero. Anything else escaping a command is a bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib


class MedicError(Exception):
    """A problem the user can fix; the message says what and, where possible, how."""


class DataFileError(MedicError):
    """A metrics CSV or sidecar is missing, empty or malformed."""


class RunNotFoundError(MedicError):
    """A run id, file or checkpoint named by the user does not exist."""


def one_line(text: str, limit: int = 300, tail: bool = False) -> str:
    """A library's message on one line, cut (if at all) between words, never inside one; its end
    rather than its start with ``tail``."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return "… " + text[-limit:].split(" ", 1)[-1] if tail else text[:limit].rsplit(" ", 1)[0] + " …"


def did_you_mean(flag: str, known) -> str:
    """``did you mean --epochs?`` for a mistyped or abbreviated flag (empty when nothing is close).
    Dashes and underscores are compared alike; a flag that starts a known one suggests it."""
    typed = flag.split("=")[0].lstrip("-").replace("-", "_")
    names = {k.lstrip("-").replace("-", "_"): k for k in known if k.startswith("--")}
    starts = sorted(n for n in names if n.startswith(typed)) if len(typed) >= 2 else []
    close = starts[:1] or difflib.get_close_matches(typed, list(names), n=1)
    return f"did you mean --{close[0]}?" if close else ""


class Problems(list):
    """Every problem found in a data set, one line each, so that all of them can be fixed in one
    go (a long loop of fix and retry on 300 cases otherwise). ``check`` raises them as one error."""

    LIMIT = 50

    def add(self, err: Exception | str) -> None:
        self.append(str(err))

    def text(self, where: str) -> str:
        """One problem as it is; several as a count and one indented line each, in case order
        (the problems of a case together), the rest after them."""
        if len(self) == 1:
            return self[0]
        ordered = sorted(self, key=lambda line: (0, line.split(":")[0]) if line.startswith("case ") else (1, ""))
        lines = ordered[:self.LIMIT] + ([f"and {len(self) - self.LIMIT} more"] if len(self) > self.LIMIT else [])
        return f"{len(self)} problems in {where}:\n" + "\n".join(f"  {line}" for line in lines)

    def check(self, where: str) -> None:
        """Raise a ``MedicError`` listing the problems (up to ``LIMIT``), if there are any."""
        if self:
            raise MedicError(self.text(where))
