"""When the background writers (``medic.train.outputs.writer``) may work: not while the training
thread runs its training loop, unless that loop is long.

    Gate    closed by the training thread for its training loop, opened after it
    pause   a writer's job between two steps (a case's mask, a picture) waits at its gate
    paused  how long a writer has waited there (left out of its working time)
"""

from __future__ import annotations

import threading
import time

# the longest the writers wait, within one training loop, for it to end (``Gate``)
HOLD_LIMIT_S = 10.0
_local = threading.local()


class Gate:
    """Closed while the training thread runs its training loop: a writer starts a job, or the
    next step of one (``pause``), only while it is open, or once the loop has run
    ``HOLD_LIMIT_S`` (a long epoch: then alongside it). On a CPU the outputs then take their
    cores from the validation and the time between epochs, not from the training steps, whose
    many small operations need the interpreter far more often than the validation's large ones."""

    def __init__(self):
        self._open = threading.Event()
        self._open.set()
        self._since = 0.0

    def close(self) -> None:
        self._since = time.monotonic()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def wait(self) -> float:
        """Wait while closed (at most until ``HOLD_LIMIT_S`` after it closed); the seconds waited."""
        if self._open.is_set():
            return 0.0
        t0 = time.monotonic()
        self._open.wait(max(0.0, self._since + HOLD_LIMIT_S - t0))
        return time.monotonic() - t0


def serve(gate: Gate | None) -> None:
    """The calling thread is a writer: its ``pause`` waits at ``gate``."""
    _local.gate, _local.paused = gate, 0.0


def pause() -> None:
    """Between two steps of a writer's job (a case's mask, a picture): wait at its ``Gate``;
    elsewhere nothing."""
    gate = getattr(_local, "gate", None)
    if gate is not None:
        _local.paused += gate.wait()


def paused() -> float:
    """The seconds the calling writer has waited at its gate so far."""
    return getattr(_local, "paused", 0.0)
