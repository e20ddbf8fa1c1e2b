"""What the notebooks in ``notebooks/`` call, so that no logic lives only in a notebook.

- ``project_root(value)``: the folder whose ``metrics/``, ``analysis/``, ... a notebook uses, the
  same whether JupyterLab runs it (kernel cwd ``notebooks/``) or papermill from the project root.
- ``parameters(namespace, allowed)`` / ``train_config(namespace)``: check a notebook's parameters;
  papermill only warns about an unknown parameter, so a typo must fail here, loudly.
- ``show_analysis`` / ``analysis_outputs``: the figures and report of ``medic analyze`` inline.
- ``python -m medic.notebooks run-all OUT``: run the four notebooks headlessly (``make notebooks``).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable

from medic.errors import MedicError

KERNEL_NAME = "medic"
NOTEBOOKS = ("01_train", "02_monitor", "03_analyze", "04_compare")
NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# parameters of 01_train besides the training options themselves
TRAIN_NOTEBOOK_PARAMETERS = ("interactive", "project_root", "refresh_seconds")


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


def parameters(namespace: dict[str, Any], allowed: Iterable[str]) -> dict[str, Any]:
    """The values of the ``allowed`` parameters found in ``namespace`` (a notebook's ``globals()``).
    A parameter papermill injected that is not allowed raises ``MedicError`` with a did-you-mean."""
    allowed = list(allowed)
    for name in _injected_names():
        if name not in allowed:
            hint = difflib.get_close_matches(name, allowed, n=1)
            raise MedicError(f"unknown parameter {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                             + f" (this notebook takes: {', '.join(sorted(allowed))})")
    return {name: namespace[name] for name in allowed if name in namespace}


def train_config(namespace: dict[str, Any]):
    """The ``TrainConfig`` from the training notebook's parameters; a typo'd name or a bad value
    raises ``MedicError`` naming it."""
    from medic.config import TrainConfig
    options = [f.name for f in fields(TrainConfig)]
    values = parameters(namespace, options + list(TRAIN_NOTEBOOK_PARAMETERS))
    return TrainConfig.from_dict({k: v for k, v in values.items() if k in options})


# -- analysis inline --------------------------------------------------------------------------------

def figure_png(fig, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    from matplotlib import pyplot as plt
    plt.close(fig)
    return buf.getvalue()


def analysis_outputs(run_id: str, root: str | os.PathLike | None = None,
                     batch: bool = True) -> tuple[list[tuple[str, bytes]], str]:
    """The figures of ``medic analyze`` for a run as (title, PNG bytes), and its text report."""
    from medic import analysis
    from medic.catalog import load_run
    run = load_run(run_id, root=root)
    images = [("training analysis", figure_png(analysis.training_figure(run.epochs))),
              ("training stats", figure_png(analysis.stats_figure(run.epochs)))]
    if batch and run.batches is not None and len(run.batches):
        images.append(("batch analysis", figure_png(analysis.batch_figure(run.batches))))
    return images, analysis.report_text(run.epochs, source=run.paths.epoch_csv)


def show_analysis(run_id: str, root: str | os.PathLike | None = None, batch: bool = True) -> None:
    """Display the analysis figures (as PNG, so papermill keeps them) and the report of a run."""
    from IPython.display import Image, display
    images, report = analysis_outputs(run_id, root, batch)
    for _, png in images:
        display(Image(data=png))
    print(report)


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
    parser = argparse.ArgumentParser(prog="python -m medic.notebooks",
                                     description="Run the notebooks headlessly with papermill.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run-all", help="train a small run, then monitor, analyse and compare it")
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
        raise MedicError(f"notebook failed: {err.ename}: {err.evalue}") from None
    return 0


if __name__ == "__main__":
    from medic.cli import run_main
    sys.exit(run_main(main))
