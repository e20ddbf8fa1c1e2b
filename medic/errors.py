"""The one exception base of medic.

A ``MedicError`` is a mistake of input or environment that the user can fix; the CLI prints its
message as one line and exits non-zero. Anything else escaping a command is a bug and keeps its
traceback.
"""


class MedicError(Exception):
    """A problem the user can fix; the message says what and, where possible, how."""


class DataFileError(MedicError):
    """A metrics CSV or sidecar is missing, empty or malformed."""


class RunNotFoundError(MedicError):
    """A run id, file or checkpoint named by the user does not exist."""
