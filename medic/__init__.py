"""medic: DDP training of medical-imaging models with CSV metrics you can watch, analyse and compare.

Importing ``medic`` is cheap (no torch): the readers — ``medic.runs()``, ``medic.analysis``,
``medic.live`` — start fast; the trainer imports torch only when it runs.
"""

__version__ = "0.1.0"

_LAZY = {
    "MetricsLogger": ("medic.logger", "MetricsLogger"),
    "TrainConfig": ("medic.config", "TrainConfig"),
    "Project": ("medic.paths", "Project"),
    "MedicError": ("medic.errors", "MedicError"),
    "CsvTail": ("medic.tail", "CsvTail"),
    "runs": ("medic.catalog", "runs"),
    "load_run": ("medic.catalog", "load_run"),
    "Run": ("medic.catalog", "Run"),
    "compare_runs": ("medic.compare", "compare_runs"),
    "launch": ("medic.launcher", "launch"),
    "attach": ("medic.launcher", "attach"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'medic' has no attribute {name!r}")
