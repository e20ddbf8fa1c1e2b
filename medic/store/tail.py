"""Read a CSV that another process is still appending to: only the new bytes, whole lines only.

The writer contract (``medic.store.logger``): a header written once, then one complete line per row,
flushed; never rewritten in place. So a reader keeps a byte offset, reads from it, parses up to the
last newline and keeps the rest for later. A file that shrank or was replaced (a new inode) is read
again from the start. The cost of a poll grows with the new bytes, not with the file.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path


class CsvTail:
    """Incremental reader of one growing CSV file.

    ``poll()`` returns the rows completed since the last call as lists of strings, and
    ``header`` holds the column names once the header line has arrived. ``reset`` is True after a
    poll that found the file truncated or replaced (callers then drop what they had).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.header: list[str] | None = None
        self.offset = 0
        self.reset = False
        self._inode: int | None = None
        self._pending = b""

    def _restart(self) -> None:
        self.header = None
        self.offset = 0
        self._pending = b""
        self.reset = True

    def poll(self) -> list[list[str]]:
        self.reset = False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._inode is not None:
                self._restart()
                self._inode = None
            return []
        if self._inode is not None and (st.st_ino != self._inode or st.st_size < self.offset):
            self._restart()
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(st.st_size - self.offset)
        self.offset += len(data)
        data = self._pending + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data
            return []
        self._pending = data[cut + 1:]
        text = data[:cut + 1].decode("utf-8-sig" if self.header is None else "utf-8", errors="replace")
        rows = [r for r in csv.reader(io.StringIO(text)) if r]
        if self.header is None and rows:
            self.header = rows.pop(0)
        return rows

    @property
    def consumed(self) -> int:
        """Bytes of the file read as complete lines (the offset of the first unread row)."""
        return self.offset - len(self._pending)

    def poll_dicts(self) -> list[dict[str, str]]:
        rows = self.poll()
        header = self.header or []
        return [dict(zip(header, r)) for r in rows]
