"""Checkpoints: one dict of plain data (tensors, numbers, strings, lists), written atomically,
loaded with ``weights_only=True``.

    checkpoints/<id>/last.pth            every epoch (the resume point)
    checkpoints/<id>/model_epoch_N.pth   every --save_interval epochs
    checkpoints/<id>/best_model.pth      when the monitored value improves

The state is serialised once per epoch and the same bytes go to each file that epoch needs.
"""

from __future__ import annotations

import io
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import torch

from medic.errors import MedicError, RunNotFoundError
from medic.store import files
from medic.procs import pid_alive
from medic.store.paths import resume_points

FORMAT = "medic-checkpoint-1"
TEMP_FILE_RE = re.compile(r"^\..+\.pth\.(\d+)\.tmp$")
# test hook of the fault-injection suite: seconds to pause in the middle of every checkpoint write
FAULT_PAUSE_ENV = "MEDIC_FAULT_SLEEP_IN_CHECKPOINT"


def env_seconds(name: str) -> float:
    """The seconds a test hook's environment variable asks for (0 when unset or not a number)."""
    try:
        return max(0.0, float(os.environ.get(name) or 0))
    except ValueError:
        return 0.0


def _fault_pause() -> float:
    return env_seconds(FAULT_PAUSE_ENV)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": list(random.getstate()[1]), "python_pos": random.getstate()[0],
             "numpy": np_state[1].tolist(), "numpy_pos": int(np_state[2]),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    try:
        random.setstate((state["python_pos"], tuple(state["python"]), None))
        np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError):
        pass  # RNG state is a nicety: a checkpoint from another machine still resumes


def serialize(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def write_checkpoint(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, fsync, ``os.replace``, fsync the folder: a reader (or a
    crash) sees the old file or the new one, never a part."""
    pause = _fault_pause()

    def write(f) -> None:
        if pause:  # stop half-way, so that an injected kill lands inside the write
            f.write(data[:len(data) // 2])
            f.flush()
            time.sleep(pause)
            f.write(data[len(data) // 2:])
        else:
            f.write(data)
    files.write_atomic(path, write, durable=True)


def load(path: str | os.PathLike, mmap: bool = False) -> dict:
    """Load a checkpoint safely; a ``MedicError`` says whether it is missing, cut short, foreign
    or unsafe. ``mmap``: the tensors are mapped from the file, not read (to look at its record)."""
    path = Path(path)
    if not path.is_file():
        raise RunNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # the unpickler and the zip reader raise many types
        text = str(err).strip() or type(err).__name__  # an empty file raises a bare EOFError
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if "GLOBAL" in text:  # a reference to a callable, the way a pickle runs code
            what = next(line for line in lines if "GLOBAL" in line)
            raise MedicError(f"checkpoint {path} holds Python objects that could run code; "
                             f"refusing to load it (weights_only=True: {what[:160]})") from err
        if "WeightsUnpickler error" in text:  # any other unpickling step refused: not a pickle we wrote
            at = next(i for i, line in enumerate(lines) if "WeightsUnpickler error" in line)
            what = lines[at].split("WeightsUnpickler error:")[-1].strip() or " ".join(lines[at + 1:at + 2])
            raise MedicError(f"checkpoint {path} is truncated or corrupt ({what[:120]})") from err
        if isinstance(err, EOFError) or "central directory" in text or "zip archive" in text or "EOF" in text \
                or "unexpected" in text.lower():
            raise MedicError(f"checkpoint {path} is truncated or corrupt ({text.splitlines()[0][:120]})") from err
        raise MedicError(f"cannot load checkpoint {path}: {type(err).__name__}: {text.splitlines()[0][:200]}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MedicError(f"{path} is not a medic training checkpoint")
    return state


def remove_stale_temporaries(ckpt_dir: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that never finished (their writer was
    killed mid-write; the checkpoint they were to replace is intact). Files of a live process
    are left alone."""
    removed = []
    if not ckpt_dir.is_dir():
        return removed
    for p in ckpt_dir.iterdir():
        m = TEMP_FILE_RE.match(p.name)
        if m and not pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def newest_intact(ckpt_dir: Path, warn=print) -> tuple[Path, dict]:
    """The newest checkpoint of a run that loads; damaged ones are reported and skipped.
    ``last.pth`` is written after any other file of its epoch, so when it loads it is the newest."""
    error = ""
    for path in resume_points(ckpt_dir):
        try:
            return path, load(path)
        except MedicError as err:
            error = f" ({err})"
            warn(f"warning: {err}; trying an older checkpoint")
    raise RunNotFoundError(f"no intact checkpoint in {ckpt_dir}{error}")
