"""MONAI, loaded for what a training run uses, while the process group forms.

``import monai`` (and so any ``from monai.x import y``) imports all of MONAI's submodules, and
with them every optional package they find installed: Ignite (which pulls in torch's FSDP and
distributed optimizers), MLflow, jsonschema (which builds a grammar with lark at import),
matplotlib's pyplot, pandas. Measured on a 2-core machine, that is about 4.5 of the 5-6 s that
``import monai`` takes, and a run with the built-in model and data uses none of them.

So a worker imports MONAI with those packages held back: MONAI's ``optional_import`` finds them
missing, as it would on a machine without them, and only what would use them is unavailable
(MONAI's Ignite engines and handlers, bundle schema checks, its plotting and CSV helpers).
They stay importable afterwards: holding back lasts only while MONAI loads. A run with a
``--model`` or ``--dataset`` plug-in, which may use any of MONAI, imports it whole, as does any
run with ``MEDIC_IMPORT_ALL=1`` in the environment; ``MEDIC_IMPORT_ALL=0`` holds them back
for plug-ins too (plug-ins that use none of MONAI's Ignite, MLflow, schema or plotting parts).

The import runs in a thread started before the rendezvous, so it overlaps with the wait for
the other ranks (``load`` returns a handle; ``join`` before the first use of MONAI).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

# optional packages that MONAI imports eagerly and a run of the built-in model and data never uses
HELD_BACK = ("ignite", "mlflow", "jsonschema", "rfc3987_syntax", "matplotlib", "pandas")
IMPORT_ALL_ENV = "MEDIC_IMPORT_ALL"


class _HoldBack:
    """A finder placed first on ``sys.meta_path``: the held-back packages are not found."""

    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names and name not in sys.modules:
            raise ModuleNotFoundError(f"No module named {name!r} (held back while MONAI loads)", name=name)
        return None


def needs_all(cfg) -> bool:
    """Whether the run may use any of MONAI: a plug-in (for a resumed run, one recorded in its
    sidecar, or a run whose options cannot be read yet), or asked for by the environment
    (``MEDIC_IMPORT_ALL=0``: never)."""
    setting = os.environ.get(IMPORT_ALL_ENV, "")
    if setting == "0":
        return False
    if cfg.model or cfg.dataset or setting:
        return True
    return bool(cfg.resume) and resumed_with_plugin(cfg)


def resumed_with_plugin(cfg) -> bool:
    """Whether the run that ``cfg.resume`` continues was trained with a plug-in, by its sidecar
    (read without loading the checkpoint: a requeued SLURM job starts seconds sooner); a run
    whose sidecar says nothing counts as one."""
    from medic.errors import MedicError
    from medic.store.paths import Project, resumed_run_id
    from medic.store.sidecar import read_sidecar
    try:
        project = Project.at(cfg.output_dir or None)
        stored = (read_sidecar(project.sidecar(resumed_run_id(project, cfg.resume))) or {}).get("config")
    except MedicError:
        return True
    return not isinstance(stored, dict) or bool(stored.get("model") or stored.get("dataset"))


def import_monai(whole: bool) -> None:
    if "monai" in sys.modules:
        return
    if whole:
        importlib.import_module("monai")
        return
    held = [n for n in HELD_BACK if n not in sys.modules]  # already loaded: nothing to save
    finder = _HoldBack(held)
    sys.meta_path.insert(0, finder)
    try:
        importlib.import_module("monai")
    finally:
        sys.meta_path.remove(finder)


class Loading:
    """MONAI importing in a background thread; ``join`` waits for it and re-raises its error."""

    def __init__(self, whole: bool):
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(whole,), name="medic-import", daemon=True)
        self.thread.start()

    def _run(self, whole: bool) -> None:
        try:
            import_monai(whole)
        except BaseException as err:  # shown on the main thread, where MONAI is used
            self.error = err

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def load(cfg) -> Loading:
    """Start importing MONAI for this run (whole when ``needs_all(cfg)``)."""
    return Loading(whole=needs_all(cfg))
