"""What the notebooks in ``notebooks/`` call, so that no logic lives only in a notebook.

- ``project_root(value)``: the folder whose ``metrics/``, ``analysis/``, ... a notebook uses, the
  same whether JupyterLab runs it (kernel cwd ``notebooks/``) or papermill from the project root.
- ``train_config`` / ``monitor_settings`` / ``analyze_settings`` / ``compare_settings``: each
  notebook's parameters, checked (``parameters``). papermill only warns about an unknown
  parameter, so a typo must fail here, loudly, naming it.
- ``show_analysis``, ``comparison``, ``option_differences``, ``show_figure``: the outputs of
  ``medic analyze`` / ``medic compare`` inline, as PNG images that papermill keeps.
- ``python -m medic.notebooks run-all [OUT]``: run the four notebooks headlessly (``make notebooks``).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import os
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from medic.errors import MedicError
from medic.live.session import show_analysis  # noqa: F401 (03_analyze calls nb.show_analysis)

KERNEL_NAME = "medic"
NOTEBOOKS = ("01_train", "02_monitor", "03_analyze", "04_compare")
NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
LITERAL_TYPES = (bool, int, float, str, list, dict, type(None))
# each notebook's parameters (name -> type); 01_train also takes every training option
COMMON = {"project_root": str, "interactive": bool}
TRAIN_NOTEBOOK_PARAMETERS = {**COMMON, "refresh_seconds": float, "launcher": str, "slurm": dict}
MONITOR_PARAMETERS = {"run_id": str, **COMMON, "refresh_seconds": float, "timeout_seconds": float}
COMPARE_PARAMETERS = {"run_ids": list, "where": dict, "sweep": str, "status": str, "since": str, "top": int,
                      "by": str, "metrics": list, **COMMON}
SWEEP_PARAMETERS = {"grid": dict, "space": dict, "trials": int, "fixed": dict, "slots": int, "prune": str,
                    "prune_startup": int, "launcher": str, "slurm": dict, "sweep_id": str, **COMMON,
                    "refresh_seconds": float}
ANALYZE_PARAMETERS = {"run_id": str, "metrics_file": str, **COMMON, "batch_metrics": bool, "top_n": int}


def project_root(value: str | os.PathLike = "", start: str | os.PathLike | None = None) -> Path:
    """``value`` if given, else the nearest folder at or above ``start`` (default: the working
    directory) that is a medic checkout (``pyproject.toml`` and ``medic/``) or already holds
    ``metrics/``; else ``start`` itself."""
    if value:
        root = Path(value).expanduser().resolve()
        if not root.is_dir():
            raise MedicError(f"project_root {str(value)!r} is not a folder")
        return root
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if ((folder / "pyproject.toml").is_file() and (folder / "medic").is_dir()) \
                or (folder / "metrics").is_dir():
            return folder
    return here


def _injected_names() -> list[str]:
    """Names assigned by papermill's injected-parameters cell ('# Parameters'), if this kernel ran one."""
    try:
        from IPython import get_ipython
        history = get_ipython().user_ns.get("In") or []
    except Exception:
        return []
    for source in reversed(history):
        if source.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return []
            return [t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)]
    return []


def parameters(namespace: dict[str, Any], spec: dict[str, type]) -> dict[str, Any]:
    """The values of the parameters named in ``spec`` (name -> type) found in ``namespace`` (a
    notebook's ``globals()``). A parameter papermill injected that ``spec`` does not name, or a
    value of the wrong type, raises ``MedicError`` naming it."""
    for name in _injected_names():
        if name not in spec:
            hint = difflib.get_close_matches(name, list(spec), n=1)
            raise MedicError(f"unknown parameter {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                             + f" (this notebook takes: {', '.join(spec)})")
    # only plain values are parameters: a function or module of the same name is something else
    values = {name: namespace[name] for name in spec
              if name in namespace and isinstance(namespace[name], LITERAL_TYPES)}
    for name, value in values.items():
        kind = spec[name]
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise MedicError(f"parameter {name} must be {kind.__name__}, got {value!r}")
    return values


def train_config(namespace: dict[str, Any]):
    """The ``TrainConfig`` from the training notebook's parameters; a typo'd name or a bad value
    raises ``MedicError`` naming it."""
    from medic.config import TrainConfig
    spec = {f.name: object for f in fields(TrainConfig)}  # TrainConfig checks their types itself
    values = parameters(namespace, {**spec, **TRAIN_NOTEBOOK_PARAMETERS})
    return TrainConfig.from_dict({k: v for k, v in values.items() if k in spec})


def launch_settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """Where the training notebook's run goes (``launcher`` and the ``slurm`` request), checked,
    as keyword arguments of ``medic.launch``."""
    from medic.config import TrainConfig
    from medic.slurm.options import SlurmOptions
    spec = {f.name: object for f in fields(TrainConfig)}
    p = parameters(namespace, {**spec, **TRAIN_NOTEBOOK_PARAMETERS})
    options = SlurmOptions.from_dict({**p.get("slurm", {}), "launcher": p.get("launcher", "local")})
    return {"launcher": options.launcher, "slurm": dict(p.get("slurm", {}))}


def shell_command(config, where: dict[str, Any]) -> str:
    """The ``medic train`` command line of the same run (``where``: from ``launch_settings``)."""
    from medic.slurm.options import SlurmOptions
    args = config.to_args(include_launcher=True)
    if where.get("launcher") == "slurm":
        args += SlurmOptions.from_dict({**where.get("slurm", {}), "launcher": "slurm"}).to_args()
    return " ".join(["medic", "train", *(shlex.quote(a) for a in args)])


def monitor_settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """The monitor notebook's parameters, checked, as keyword arguments of ``medic.live.monitor``."""
    p = parameters(namespace, MONITOR_PARAMETERS)
    if p.get("refresh_seconds", 1.0) <= 0 or p.get("timeout_seconds", 0.0) < 0:
        raise MedicError("refresh_seconds must be > 0 and timeout_seconds >= 0, got "
                         f"{p.get('refresh_seconds')} and {p.get('timeout_seconds')}")
    root = project_root(p.get("project_root", ""))
    # the newest run even while it starts (its sidecar only): the monitor waits for its rows
    return {"run": run_id_for(p.get("run_id", ""), root, need="any"), "root": root,
            "refresh": p.get("refresh_seconds", 1.0), "timeout": p.get("timeout_seconds") or None}


def run_id_for(run_id: str, root: str | os.PathLike, need: str = "epoch_csv") -> str:
    """``run_id`` checked to exist in the project, or the newest run (with the file ``need``)
    when it is empty."""
    from medic.store.catalog import check_run_id, newest_run_id
    from medic.store.paths import Project
    project = Project.at(root)
    if not run_id:
        return newest_run_id(project, need)
    check_run_id(project, str(run_id))
    return str(run_id)


def analyze_settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """The analysis notebook's parameters, checked; ``run`` is the loaded ``medic.load_run`` run."""
    from medic.store.catalog import load_run
    from medic.errors import DataFileError
    p = parameters(namespace, ANALYZE_PARAMETERS)
    if p.get("top_n", 5) < 1:
        raise MedicError(f"top_n must be >= 1, got {p['top_n']}")
    root = project_root(p.get("project_root", ""))
    spec = p.get("metrics_file") or run_id_for(p.get("run_id", ""), root)
    run = load_run(spec, root=root)
    if run.epochs.empty:
        raise DataFileError(f"run {run.run_id} has no complete epoch yet: nothing to analyse")
    return {"run": run, "root": root, "batch": p.get("batch_metrics", True), "top_n": p.get("top_n", 5)}


def compare_settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """The comparison notebook's parameters, checked; ``runs`` are the chosen, loaded runs: the
    ones named in ``run_ids``, else the runs the filters pick (``where``: options; ``sweep``,
    ``status``, ``since``, ``top``/``by``: those of ``medic runs``, from the same catalog), else
    the newest two."""
    from medic.store.catalog import catalog, check_run_id, is_missing, load_run
    from medic.errors import RunNotFoundError
    from medic.store.paths import Project
    p = parameters(namespace, COMPARE_PARAMETERS)
    root = project_root(p.get("project_root", ""))
    project = Project.at(root)
    ids, where = [str(i) for i in p.get("run_ids", [])], p.get("where", {})
    filters = {k: p[k] for k in ("sweep", "status", "since", "top", "by") if p.get(k) not in (None, "", 0)}
    if ids:
        for run_id in ids:
            check_run_id(project, run_id)
    elif where or filters:
        table = catalog(root, **filters)
        table = table[table["files"].str.split(",").map(lambda tags: "epoch" in tags)]
        ids = [r["run_id"] for r in table.to_dict("records")
               if _matches({k: r[k] for k in where if k in r and not is_missing(r[k])}, where)]
        if not ids:
            what = (f"belongs to sweep {p['sweep']!r}" if set(filters) == {"sweep"} and not where else
                    f"has the options {where}" if where and not filters else
                    "matches " + ", ".join(f"{k}={v!r}" for k, v in {**filters, **where}.items()))
            raise RunNotFoundError(f"no run in {project.metrics} {what}")
    else:
        ids = [i for i in project.run_ids() if project.epoch_csv(i).exists()][-2:]
        if not ids:
            raise RunNotFoundError(f"no runs in {project.metrics}; train one first (01_train)")
    runs = [load_run(i, root=root) for i in ids]
    empty = [r.run_id for r in runs if r.epochs.empty]
    if empty:
        raise MedicError(f"run(s) {', '.join(empty)} have no complete epoch yet: nothing to compare")
    metrics = p.get("metrics") or []
    for name in metrics:
        missing = [r.run_id for r in runs if name not in r.epochs.columns]
        if missing:
            raise MedicError(f"metric {name!r} is not recorded by run(s) {', '.join(missing)}")
    return {"runs": runs, "metrics": metrics, "root": root}


def sweep_settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """The sweep notebook's parameters, checked: ``start`` (the keyword arguments of
    ``medic.sweep``) or ``sweep_id`` (a sweep to follow), ``root``, ``refresh``."""
    p = parameters(namespace, SWEEP_PARAMETERS)
    if p.get("refresh_seconds", 2.0) <= 0:
        raise MedicError(f"refresh_seconds must be > 0, got {p['refresh_seconds']}")
    start = {k: p[k] for k in ("grid", "space", "trials", "fixed", "slots", "prune", "prune_startup", "launcher",
                               "slurm") if k in p}
    return {"start": start, "sweep_id": p.get("sweep_id", ""), "root": project_root(p.get("project_root", "")),
            "refresh": p.get("refresh_seconds", 2.0)}


def comparison(runs: list, metrics: list[str] | None = None):
    """The figure and summary table of ``medic compare`` for loaded runs (one run is allowed: its
    curves alone), overlaying ``metrics`` (default: Avg_Loss and the metrics all runs share)."""
    from medic.analysis import compare, figures
    metrics = list(metrics or compare.shared_metrics(runs))
    labels = compare.run_labels(runs)
    fig = figures.comparison_figure(list(zip(labels, [r.epochs for r in runs])), metrics)
    return fig, compare.summary_table(runs, compare.with_per_class(runs, metrics))


def _matches(config: dict[str, Any] | None, where: dict[str, Any]) -> bool:
    if not isinstance(config, dict):
        return False
    for key, want in where.items():
        have = config.get(key)
        if isinstance(want, float) or isinstance(have, float):
            try:
                if abs(float(have) - float(want)) > 1e-12 * max(1.0, abs(float(want))):
                    return False
            except (TypeError, ValueError):
                return False
        elif have != want:
            return False
    return True


def option_differences(runs: list):
    """A table (one row per run) of the training options whose values differ between the runs."""
    import pandas as pd
    from medic.store.catalog import differing_options
    keys = differing_options([r.config for r in runs])
    rows = [{k: r.config.get(k) for k in keys} if keys else {"options": "no option differs"} for r in runs]
    return pd.DataFrame(rows, index=pd.Index([r.run_id for r in runs], name="run_id"))


def show_figure(fig) -> None:
    """Display a matplotlib figure as a PNG output, which papermill keeps in the notebook."""
    from IPython.display import Image, display
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    display(Image(data=buf.getvalue()))


# -- the kernel and make notebooks --------------------------------------------------------------------

def ensure_kernel(name: str = KERNEL_NAME) -> None:
    """Register this interpreter as the Jupyter kernel ``name`` in its environment, if missing."""
    from jupyter_client.kernelspec import KernelSpecManager
    if name in KernelSpecManager().find_kernel_specs():
        return
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", name,
                    "--display-name", f"{name} ({Path(sys.prefix).name})"],
                   check=True, stdout=subprocess.DEVNULL)


# what make notebooks trains: small enough to finish in a minute or two on a laptop CPU
QUICK_TRAINING = dict(epochs=3, num_samples=48, image_size=32, batch_size=4, nproc_per_node=2,
                      log_batch_metrics=True, log_interval=2, val_fraction=0.25)


def run_notebook(name: str, out_dir: Path, root: Path, parameters: dict[str, Any],
                 timeout: float = 900) -> Path:
    import papermill as pm
    out = out_dir / f"{name}.ipynb"
    print(f"running {name} -> {out}", flush=True)
    pm.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(out), kernel_name=KERNEL_NAME,
                        parameters=dict(parameters, interactive=False, project_root=str(root)),
                        cwd=str(root), execution_timeout=timeout, progress_bar=False)
    return out


def run_all(out_dir: str | os.PathLike, root: str | os.PathLike | None = None,
            training: dict[str, Any] | None = None) -> list[Path]:
    """Train a small run with 01, then monitor, analyse and compare with 02-04; the executed
    notebooks go to ``out_dir``."""
    root = project_root(root or "")
    out = Path(out_dir)
    out = out if out.is_absolute() else root / out
    out.mkdir(parents=True, exist_ok=True)
    ensure_kernel()
    done = [run_notebook("01_train", out, root, dict(training or QUICK_TRAINING))]
    for name in NOTEBOOKS[1:]:
        done.append(run_notebook(name, out, root, {}))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medic.notebooks", allow_abbrev=False,
                                     description="Run the notebooks headlessly with papermill.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run-all", allow_abbrev=False, help="train a small run, then monitor, analyse and compare it")
    p.add_argument("out_dir", nargs="?", default="analysis/notebooks",
                   help="where the executed notebooks go (default: analysis/notebooks)")
    p.add_argument("--root", default="", help="project root (default: found from the working directory)")
    p.add_argument("--epochs", type=int, default=QUICK_TRAINING["epochs"])
    p.add_argument("--nproc_per_node", "--nproc-per-node", type=int,
                   default=QUICK_TRAINING["nproc_per_node"])
    sub.add_parser("kernel", help=f"register the '{KERNEL_NAME}' Jupyter kernel if missing")
    args = parser.parse_args(argv)
    if args.command == "kernel":
        ensure_kernel()
        return 0
    import papermill as pm
    training = dict(QUICK_TRAINING, epochs=args.epochs, nproc_per_node=args.nproc_per_node)
    try:
        for path in run_all(args.out_dir, args.root, training):
            print(f"wrote {path}")
    except pm.PapermillExecutionError as err:
        first = (err.evalue or "").strip().splitlines()[:1]
        raise MedicError(f"a notebook failed with {err.ename}: {first[0] if first else ''} "
                         f"(the executed notebook, error included, is in {args.out_dir})") from None
    return 0


if __name__ == "__main__":
    from medic.cli import run_main
    sys.exit(run_main(main))
