"""Users' own code: ``--model pkg.mod:fn`` and ``--dataset pkg.mod:fn``, importable from the working
directory, or a file, ``--model path/to/net.py:fn`` (recorded as an absolute path, so a resume
finds it from any folder; its folder is put on the import path for its own imports). The
callable takes the run's ``TrainConfig``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from medic.errors import MedicError


def _ensure_cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def check_plugin(spec: str, what: str) -> None:
    """Fail early, without running the user's code, when the module cannot be found."""
    _ensure_cwd_on_path()
    module = spec.rpartition(":")[0]
    if module.endswith(".py"):
        if not os.path.isfile(module):
            raise MedicError(f"--{what} {spec!r}: no file {module}")
        return
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as err:
        found = None
        reason = str(err)
    else:
        reason = "no such module"
    if found is None:
        raise MedicError(f"--{what} {spec!r}: cannot import module {module!r} ({reason}); "
                         f"it must be importable from {os.getcwd()}")


# spec → its callable: a plug-in imported early (``import_plugins``) is not imported again, so a
# file plug-in's top-level code runs once per process
_LOADED: dict[str, object] = {}


def import_plugins(cfg) -> None:
    """Import the run's ``--model`` and ``--dataset`` modules now, in the process that trains
    with them: a module that fails to import is reported before the training sets up."""
    for what in ("model", "dataset"):
        if getattr(cfg, what):
            load_plugin(getattr(cfg, what), what)


def load_plugin(spec: str, what: str):
    if spec in _LOADED:
        return _LOADED[spec]
    _ensure_cwd_on_path()
    module_name, _, attr = spec.rpartition(":")
    try:
        module = _import_file(module_name) if module_name.endswith(".py") else importlib.import_module(module_name)
    except Exception as err:  # the user's module may fail in any way: report it as theirs
        raise MedicError(f"--{what} {spec!r}: importing {module_name!r} failed: "
                         f"{type(err).__name__}: {err}") from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise MedicError(f"--{what} {spec!r}: {module_name!r} has no callable {attr!r}")
    _LOADED[spec] = fn
    return fn


def _import_file(path: str):
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickling (DataLoader workers) finds the plug-in's classes by name
    spec.loader.exec_module(module)
    return module
