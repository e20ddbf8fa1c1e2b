"""Users' own code: ``--model pkg.mod:fn`` and ``--dataset pkg.mod:fn``, importable from the working
directory. The callable takes the run's ``TrainConfig``."""

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
    module = spec.split(":")[0]
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


def load_plugin(spec: str, what: str):
    _ensure_cwd_on_path()
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # the user's module may fail in any way: report it as theirs
        raise MedicError(f"--{what} {spec!r}: importing {module_name!r} failed: "
                         f"{type(err).__name__}: {err}") from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise MedicError(f"--{what} {spec!r}: {module_name!r} has no callable {attr!r}")
    return fn
