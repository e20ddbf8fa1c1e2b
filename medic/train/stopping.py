"""A rank's wish to stop: signals (SIGINT, SIGTERM; under SLURM a SIGTERM asks for a requeue), the
death of torchrun's agent, and on rank 0 a stop request in the run's files with the heartbeat.
The ranks then agree on it at a step boundary (``medic.train.sync``)."""

from __future__ import annotations

import math
import os
import signal
import time

from medic.slurm.script import REQUEUE_ENV
from medic.store.control import Heartbeat, read_stop_request


class StopFlag:
    """SIGINT/SIGTERM only set a flag; the loop agrees on it across ranks at a step boundary
    (``StepSync``). A third signal gives up on the graceful path. Under torchrun, the agent's
    death counts too. On rank 0 (``watch``), so does a stop request in the run's files
    (``medic.store.control``: ``medic stop`` or a Stop button, from any host), looked for at most
    every ``CHECK_S`` seconds (one stat), together with the heartbeat; its ``action`` is kept:
    ``stop``, or ``requeue`` (checkpoint, and leave the run to be continued).

    One stop can reach a worker several times within milliseconds (a scheduler signals every
    process of the job, and the launcher and torchrun's agent each pass the signal on), so
    signals less than ``BURST`` seconds after the last counted one count as the same request."""

    BURST = 1.0
    CHECK_S = 1.0

    def __init__(self):
        self.requested = False
        self.action = "stop"
        self.files = None        # (project, run id) whose stop request rank 0 looks for
        self.heartbeat = None
        self._check_at = 0.0
        self.signals = 0
        self._counted_at = -math.inf
        self._parent = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if signum == signal.SIGTERM and os.environ.get(REQUEUE_ENV) and not self.requested:
            self.action = "requeue"  # scontrol requeue, a preemption: SLURM continues the job
        now = time.monotonic()
        if now - self._counted_at >= self.BURST:
            self.signals += 1
            self._counted_at = now
        self.requested = True
        if self.signals >= 3:
            raise KeyboardInterrupt

    def watch(self, project, run_id: str) -> None:
        """Rank 0: look for the run's stop request, and beat its heartbeat (a thread for the
        whole process, and at each check), from now on."""
        self.files = (project, run_id)
        self.heartbeat = Heartbeat.of(project, run_id).start()

    def local(self) -> bool:
        if self._parent is not None and os.getppid() != self._parent:
            self.requested = True
        if self.files is not None and not self.requested:
            self._check_files()
        return self.requested

    def _check_files(self) -> None:
        now = time.monotonic()
        if now < self._check_at:
            return
        self._check_at = now + self.CHECK_S
        self.heartbeat.beat_if_due()
        project, run_id = self.files
        if os.path.exists(project.stop_request(run_id)):
            request = read_stop_request(project, run_id)
            if request is not None:
                self.requested, self.action = True, request["action"]
