"""Named moments of a run's start, where a test can hold it: ``MEDIC_TEST_HOLD_AT=<stage>`` makes
the process that reaches that stage write its name to ``MEDIC_TEST_HOLD_FILE`` (if set) and wait
there, so a kill at exactly that moment can be reproduced.

    claimed      the run id is claimed (its sidecar exists)
    torch        a training process has imported torch
    rendezvous   the training processes have met (the process group exists)
    header       rank 0 has written the epoch CSV's header

Nothing happens unless the variable names the stage.
"""

from __future__ import annotations

import os
import time

HOLD_ENV = "MEDIC_TEST_HOLD_AT"
HOLD_FILE_ENV = "MEDIC_TEST_HOLD_FILE"
STAGES = ("claimed", "torch", "rendezvous", "header")


def hold_at(stage: str) -> None:
    """Wait here (until killed) when ``MEDIC_TEST_HOLD_AT`` names ``stage``."""
    if os.environ.get(HOLD_ENV) != stage:
        return
    marker = os.environ.get(HOLD_FILE_ENV)
    if marker:
        with open(marker, "a", encoding="utf-8") as f:
            f.write(f"{stage} {os.getpid()}\n")
    while True:
        time.sleep(3600)
