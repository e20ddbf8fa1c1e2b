"""``python -m medic.sweeps.execute NOTEBOOK OUT PARAMETERS.json ROOT [--resume RUN_ID]``: one
trial's papermill run (``--resume``: a SLURM job that continues its run), with the parameters read
from JSON (papermill's own ``-y``/``-f`` read YAML, which turns a float
such as ``1e-07`` into a string)."""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    import papermill as pm
    notebook, out, parameters, root, *resume = argv
    with open(parameters, encoding="utf-8") as f:
        values = json.load(f)
    if resume[:1] == ["--resume"] and len(resume) == 2:
        values["resume"] = resume[1]
    pm.execute_notebook(notebook, out, parameters=values, kernel_name="medic", cwd=root,
                        progress_bar=False, log_output=False)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as err:  # papermill's error names the failing cell; the notebook keeps the rest
        print(f"medic: error: the trial notebook failed: {type(err).__name__}: "
              f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}", file=sys.stderr)
        sys.exit(1)
