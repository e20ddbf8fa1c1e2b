"""medic: DDP training of medical-imaging models with CSV metrics you can watch, analyse and compare.

Importing ``medic`` is cheap (no torch): the readers — ``medic.runs()``, ``medic.analysis``,
``medic.live`` — start fast; the trainer (``medic.train``) imports torch only when it runs.
The names below are loaded on first use.
"""

__version__ = "0.1.0"

_LAZY = {
    "MetricsLogger": ("medic.store.logger", "MetricsLogger"),
    "TrainConfig": ("medic.config", "TrainConfig"),
    "Project": ("medic.store.paths", "Project"),
    "MedicError": ("medic.errors", "MedicError"),
    "CsvTail": ("medic.store.tail", "CsvTail"),
    "runs": ("medic.store.catalog", "runs"),
    "catalog": ("medic.store.catalog", "catalog"),
    "load_run": ("medic.store.catalog", "load_run"),
    "Run": ("medic.store.catalog", "Run"),
    "compare_runs": ("medic.analysis.compare", "compare_runs"),
    "compare_paired": ("medic.analysis.paired", "compare_paired"),
    "launch": ("medic.jobs", "launch"),
    "attach": ("medic.jobs", "attach"),
    "sweep": ("medic.sweeps.handle", "sweep"),
    "attach_sweep": ("medic.sweeps.handle", "attach_sweep"),
    "sweep_summary": ("medic.sweeps.results", "sweep_summary"),
    "predict": ("medic.train.predict", "predict"),
    "load_model": ("medic.train.outputs.restore", "load_model"),
    "figures": ("medic.analysis.figures", None),  # ``from medic import figures``: the module
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        loaded = importlib.import_module(module)
        return loaded if attr is None else getattr(loaded, attr)
    raise AttributeError(f"module 'medic' has no attribute {name!r}")
