"""Bad input (one clear line, exit 2, nothing changed) and unsafe or damaged checkpoints.

Part of the fault-injection suite (``pytest -m faults``; helpers in ``tests/_fault_helpers.py``).
Everything is real: ``medic train`` jobs with two DDP processes on CPU (gloo). The suite ends with
one line, ``faults injected: N, checks: M``, printed and written to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from _fault_helpers import COUNTS, EPOCHS, NEWEST_SAVED, SAVE, check, fault_env, injected, note, snapshot, snapshot_diff
from conftest import PY, ROOT

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("fault_summary")]


# -- 5. bad input, 6. unsafe and damaged checkpoints ---------------------------------------------

def write_png(path: Path, value: int = 0) -> None:
    import numpy as np
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(path)


class Evil:
    """Unpickling this runs a shell command: what a checkpoint from a stranger might hold."""

    def __reduce__(self):
        return os.system, ('touch "$EVIL_MARKER"',)


@pytest.fixture(scope="module")
def bad_inputs(reference, tmp_path_factory):
    """A project holding a finished run, and every kind of bad input next to it."""
    import torch
    from medic.train.outputs import checkpoint as ckpt
    base = tmp_path_factory.mktemp("bad")
    root = base / "project"
    shutil.copytree(reference.root, root, copy_function=os.link)  # hard links: cheap and exact
    for name in ("nomask/images/a.png", "nomask/images/b.png", "nomask/masks/a.png",
                 "mismatch/images/a.png", "mismatch/masks/b.png", "unreadable/masks/a.png"):
        write_png(root / "data" / name)
    (root / "data" / "unreadable" / "images").mkdir(parents=True)
    (root / "data" / "unreadable" / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    (root / "a_file").write_text("a regular file, where a folder is needed\n")
    (root / "empty").mkdir()
    ref_ckpt = root / "checkpoints" / reference.run_id / "last.pth"
    state = ckpt.load(ref_ckpt)
    state["config"]["num_classes"] = 3  # the weights are those of a 2-class model
    torch.save(state, root / "foreign.pth")
    (root / "notes.pth").write_text("not a checkpoint\n")
    (root / "truncated.pth").write_bytes(ref_ckpt.read_bytes()[:100_000])
    torch.save({"format": ckpt.FORMAT, "model": Evil()}, root / "evil.pth")
    return SimpleNamespace(root=root, base=base, run_id=reference.run_id)


def bad_input_cases(run_id: str) -> list[tuple[str, list[str], str]]:
    more = ["--epochs", str(EPOCHS + 4)]
    return [
        ("missing data folder", ["--data", "data/nope"], "data folder data/nope does not exist"),
        ("images without masks", ["--data", "data/nomask"], "have no mask of the same name"),
        ("mismatched names", ["--data", "data/mismatch"], "have no mask of the same name in .*, e.g. a.png"),
        ("unreadable image", ["--data", "data/unreadable"], "cannot read"),
        ("plug-in module not found", ["--model", "no_such_module:build"], "cannot import module 'no_such_module'"),
        ("plug-in fails to import", ["--model", "faulty_import:model", "--dataset", "faulty:dataset"],
         "importing 'faulty_import' failed"),
        ("zero epochs", ["--epochs", "0"], "option epochs must be > 0"),
        ("negative epochs", ["--epochs", "-3"], "option epochs must be > 0"),
        ("zero batch size", ["--batch_size", "0"], "option batch_size must be > 0"),
        ("negative learning rate", ["--lr", "-0.001"], "option lr must be > 0"),
        ("zero learning rate", ["--lr", "0"], "option lr must be > 0"),
        ("zero log interval", ["--log_interval", "0"], "option log_interval must be > 0"),
        ("negative save interval", ["--save_interval", "-1"], "option save_interval must be > 0"),
        ("misspelt flag", ["--epochz", "3"], "did you mean --epochs"),
        ("unwritable output folder", ["--output_dir", "a_file/out"], "is not writable"),
        ("resume of an unknown run", ["--resume", "20000101_000000"], "run 20000101_000000 does not exist"),
        ("resume latest without runs", ["--resume", "latest", "--output_dir", "empty"], "no run with checkpoints"),
        ("resume of a missing file", ["--resume", "missing.pth"], "missing.pth does not exist"),
        ("resume with another model", ["--resume", run_id, *more, "--model", "faulty:model"], "cannot resume it with model="),
        ("resume with other classes", ["--resume", run_id, *more, "--num_classes", "3"], "cannot resume it with num_classes=3"),
        ("checkpoint of another model", ["--resume", "foreign.pth", *more], "does not fit this model"),
        ("not a checkpoint", ["--resume", "notes.pth"], "notes.pth"),
        ("truncated checkpoint", ["--resume", "truncated.pth"], "is truncated or corrupt"),
        ("checkpoint that runs code", ["--resume", "evil.pth"], "could run code; refusing to load it"),
    ]


@pytest.mark.parametrize("mode", ["single process", "2 processes"])
def test_bad_input_gets_one_clear_line_and_changes_nothing(bad_inputs, mode):
    root = bad_inputs.root
    marker = bad_inputs.base / f"evil ran ({mode})"
    env = fault_env(EVIL_MARKER=marker)
    ddp = ["--nproc_per_node", "2"] if mode == "2 processes" else []
    before = snapshot(root)
    cases = bad_input_cases(bad_inputs.run_id)
    # one interpreter start for all the cases: each still runs in a process of its own (forked
    # after the shared imports) with its own exit code and stderr
    batch = [["train", *args, "--num_samples", "16", "--image_size", "32", *ddp, "--lang", "en"]
             for _, args, _ in cases]
    listed, out = bad_inputs.base / f"cases ({mode}).json", bad_inputs.base / f"results ({mode}).json"
    listed.write_text(json.dumps(batch))
    driver = subprocess.run([PY, str(ROOT / "tests" / "_cli_batch.py"), str(listed), str(out)],
                            cwd=root, env=env, capture_output=True, text=True, timeout=600)
    check(driver.returncode == 0, driver.stderr[-3000:])
    results = [(name, SimpleNamespace(**r), expected, r["seconds"])
               for (name, _, expected), r in zip(cases, json.loads(out.read_text()))]
    check(len(results) == len(cases))
    timings, problems = [], []
    for name, proc, expected, seconds in results:
        injected("bad input")
        errors = [line for line in proc.stderr.splitlines() if line.startswith("medic: error:")]
        for ok, what in [(proc.returncode == 2, f"exit code {proc.returncode}"),
                         ("Traceback" not in proc.stderr, "a traceback"),
                         (len(errors) == 1 and re.search(expected, errors[0]), f"not one error line matching {expected!r}")]:
            COUNTS["checks"] += 1
            if not ok:
                problems.append(f"{name}: {what}; stderr:\n{proc.stderr[-1500:]}")
        timings.append(f"{name} {seconds:.1f} s")
    check(not problems, "\n\n".join(problems))
    changes = snapshot_diff(before, snapshot(root))
    check(not changes, f"bad input changed the project: {changes}")
    check(not marker.exists(), "the crafted checkpoint ran its code")
    note(f"bad input ({mode}): {len(cases)} cases, exit 2 with one line each, nothing changed; " + ", ".join(timings))


def test_checkpoint_safety_in_process(bad_inputs, tmp_path):
    """weights_only refuses code; truncated and foreign files are named as such; a run whose
    newest checkpoint is damaged resumes from the newest intact one."""
    from medic.train.outputs import checkpoint as ckpt
    from medic.errors import MedicError
    root = bad_inputs.root
    marker = tmp_path / "evil ran"
    os.environ["EVIL_MARKER"] = str(marker)
    try:
        with pytest.raises(MedicError, match="could run code"):
            ckpt.load(root / "evil.pth")
    finally:
        del os.environ["EVIL_MARKER"]
    check(not marker.exists())
    # the same file does run code when loaded without weights_only: the test above can fail
    unsafe = subprocess.run([PY, "-c", f"import torch; torch.load({str(root / 'evil.pth')!r}, weights_only=False)"],
                            env={**os.environ, "EVIL_MARKER": str(marker)}, capture_output=True, timeout=120)
    check(marker.exists(), unsafe.stderr[-1000:])
    for name, damage, expected in [("empty", b"", "truncated or corrupt"),
                                   ("half", None, "truncated or corrupt"),
                                   ("garbage", os.urandom(4096), "cannot load checkpoint|truncated or corrupt")]:
        src = root / "checkpoints" / bad_inputs.run_id / "last.pth"
        folder = tmp_path / name
        shutil.copytree(src.parent, folder, copy_function=shutil.copy2)
        data = src.read_bytes()
        (folder / "last.pth").write_bytes(damage if damage is not None else data[: len(data) // 2])
        injected("damaged checkpoint")
        with pytest.raises(MedicError, match=expected):
            ckpt.load(folder / "last.pth")
        warnings = []
        path, state = ckpt.newest_intact(folder, warn=warnings.append)
        check(path.name == NEWEST_SAVED and state["epoch"] == EPOCHS // SAVE * SAVE, path)
        check(len(warnings) == 1 and "trying an older checkpoint" in warnings[0], warnings)
    evil_run = tmp_path / "evil-run"
    shutil.copytree(root / "checkpoints" / bad_inputs.run_id, evil_run, copy_function=shutil.copy2)
    shutil.copy2(root / "evil.pth", evil_run / "last.pth")
    injected("checkpoint that runs code")
    path, _ = ckpt.newest_intact(evil_run, warn=lambda m: check("could run code" in m, m))
    check(path.name == NEWEST_SAVED)
