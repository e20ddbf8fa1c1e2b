"""What ``medic runs`` read last time, so that listing a project of thousands of runs again reads
only the runs that changed.

One file, ``<project>/analysis/.cache/catalog.json``: for each run, the size and modification time
(ns) of its epoch CSV and of its sidecar when they were read, the CSV's state from
``medic.store.epochscan`` (its figures, and where its reading stopped) and the sidecar's fields
that the catalog shows. A run whose files have the same size and time is not read again; a CSV
that grew is read from where the last reading stopped; a rewritten one, or one that now fails to
read, is read whole.

The file starts with a line naming its format version and a hash of the rest: a file torn by a
crash, from another version of medic, or edited by hand is ignored, and rebuilt from the runs. It
is replaced atomically (a temporary file renamed over it), so two listings at once each read a
whole file and each write one; the last one stays, and either is right for the files it names.
Where the project cannot be written (a folder shared read-only), the listing reads every run and
keeps nothing.

Nothing here decides a run's status: the catalog asks ``effective_status`` at every listing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medic.errors import MedicError
from medic.store.epochscan import FIGURES, extra_extremes, figures, scan_epoch_csv
from medic.store.files import write_atomic
from medic.store.paths import Project
from medic.store.sidecar import read_sidecar

VERSION = 1
MAGIC = b"medic-catalog"
# the sidecar fields the catalog uses (the rest, case lists say, can be long); a run not yet
# finished has its whole sidecar read again at each listing, for the liveness check
SIDECAR_FIELDS = ("status", "pid", "host", "hostname", "start_time", "end_time", "epochs", "config",
                  "monitor", "monitor_mode", "world_size", "sweep", "sweep_trial")


def cache_path(project: Project) -> Path:
    return project.analysis / ".cache" / "catalog.json"


def _key(path: str) -> tuple[list[int] | None, float | None]:
    """(size, mtime in ns) of ``path`` and its mtime in seconds; (None, None) when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return [st.st_size, st.st_mtime_ns], st.st_mtime


class Cached:
    """The cache file's parts: the runs' figures (one JSON line, parsed at every listing), then
    one line per CSV with its reading state (``run_id state-JSON``), parsed only for a CSV that
    changed, and copied as they are for the others when the file is written again."""

    def __init__(self, path: Path, use: bool = True):
        self.runs: dict[str, dict[str, Any]] = {}
        self._states: bytes | dict[str, bytes] = b""
        try:
            data = path.read_bytes() if use else b""
        except OSError:
            data = b""
        head, _, body = data.partition(b"\n")
        parts = head.split(b" ")
        if len(parts) != 3 or parts[0] != MAGIC or parts[1] != str(VERSION).encode() or \
                hashlib.blake2b(body, digest_size=16).hexdigest().encode() != parts[2]:
            return  # missing, torn, edited or of another version: rebuilt from the runs
        runs, _, states = body.partition(b"\n")
        try:
            loaded = json.loads(runs)
        except ValueError:
            return
        if isinstance(loaded, dict):
            self.runs, self._states = loaded, states

    def state_lines(self) -> dict[str, bytes]:
        """Each run's state line, unparsed."""
        if isinstance(self._states, bytes):
            lines = (line.partition(b" ") for line in self._states.split(b"\n") if line)
            self._states = {run_id.decode(): state for run_id, _, state in lines}
        return self._states

    def state(self, run_id: str) -> dict[str, Any] | None:
        line = self.state_lines().get(run_id)
        try:
            state = json.loads(line) if line else None
        except ValueError:
            return None
        return state if isinstance(state, dict) else None


def save(path: Path, runs: dict[str, Any], states: dict[str, bytes]) -> bool:
    """Write the cache; False (and nothing written) where the project is read-only."""
    body = b"\n".join([json.dumps(runs, separators=(",", ":")).encode()] +
                      [b"%s %s" % (run_id.encode(), line) for run_id, line in states.items()])
    head = b"%s %d %s\n" % (MAGIC, VERSION, hashlib.blake2b(body, digest_size=16).hexdigest().encode())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, head + body, sync=False)  # the hash vouches for what is read back
    except OSError:
        return False
    return True


@dataclass
class Entry:
    """One run as the catalog read it: its CSV's figures (``epochscan.figures``; None: no CSV,
    or ``problem`` says why it cannot be read), its sidecar fields (None: none, or unreadable)
    and the files' modification times."""

    figures: dict[str, Any] | None = None
    extremes: dict[str, list[float]] = field(default_factory=dict)
    problem: str = ""
    sidecar: dict[str, Any] | None = None
    csv_mtime: float | None = None
    sidecar_mtime: float | None = None


@dataclass
class Reads:
    """What a listing had to read (the test of the cache counts these)."""

    csv: list[str] = field(default_factory=list)
    sidecar: list[str] = field(default_factory=list)


def refresh(project: Project, ids: list[str], names: set[str], *, use_cache: bool = True,
            reads: Reads | None = None) -> dict[str, Entry]:
    """An ``Entry`` for each run id, reading only what changed since the cached listing.

    Args:
        project: the project whose runs these are.
        ids: the run ids to list.
        names: the file names in ``metrics/`` (one directory listing, not one check per file).
        use_cache: False reads every file (and keeps nothing): a full re-read.
        reads: where to note each file read.
    """
    path = cache_path(project)
    cached = Cached(path, use_cache)
    reads = reads if reads is not None else Reads()
    fresh: dict[str, dict[str, Any]] = {}
    new_states: dict[str, bytes] = {}
    out: dict[str, Entry] = {}
    metrics = str(project.metrics) + os.sep
    changed = False
    for run_id in ids:
        old = cached.runs.get(run_id) or {}
        entry, new = Entry(), {}
        if f"epoch_metrics_{run_id}.csv" in names:
            csv = f"{metrics}epoch_metrics_{run_id}.csv"
            key, entry.csv_mtime = _key(csv)  # before reading: a later write shows as a change next time
            if key is not None and old.get("c") == key and "f" in old:
                new.update(c=key, f=old["f"], x=old.get("x") or {})
            else:  # new, changed, or not even statable (then reading it names the problem)
                reads.csv.append(run_id)
                try:
                    state = scan_epoch_csv(csv, cached.state(run_id) if "c" in old else None)
                except MedicError as err:  # named again at every listing, never cached
                    entry.problem = str(err)
                else:
                    new_states[run_id] = json.dumps(state, separators=(",", ":")).encode()
                    new.update(c=key, f=[figures(state)[k] for k in FIGURES], x=extra_extremes(state))
            if "f" in new:
                entry.figures, entry.extremes = dict(zip(FIGURES, new["f"])), new["x"]
        if f"run_{run_id}.json" in names:
            side_path = f"{metrics}run_{run_id}.json"
            key, entry.sidecar_mtime = _key(side_path)
            if key is not None and old.get("s") == key and "d" in old:
                side = old["d"]
            else:
                reads.sidecar.append(run_id)
                full = read_sidecar(side_path)
                side = None if full is None else {k: full[k] for k in SIDECAR_FIELDS if k in full}
            entry.sidecar = side
            new.update(s=key, d=side)
        if new:
            changed = changed or new != old
            fresh[run_id] = new
        out[run_id] = entry
    if use_cache and (changed or len(fresh) != len(cached.runs)):
        states = cached.state_lines()
        states = {i: new_states[i] if i in new_states else states[i] for i in fresh
                  if i in new_states or (i in states and "c" in fresh[i])}
        save(path, fresh, states)
    return out
