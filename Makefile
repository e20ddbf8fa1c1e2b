# make demo   — set up .venv and run the main job (2-process DDP training on the built-in data)
# make test   — set up .venv and run the whole test suite
# make test-fast — the quick loop while changing code: unit tests and one short real run (a few minutes)
# make docs   — build the manual (docs/) into site/; make docs-serve serves it
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# the CPU build of torch; pip takes a local wheel when one is there
TORCH  ?= torch==2.13.0
# elsewhere: make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU wheel
TORCH_INDEX ?=
DEMO_ARGS ?= --nproc_per_node 2 --epochs 3 --num_samples 128 --log_batch_metrics --log_interval 4 --save_interval 2 --val_fraction 0.125

.PHONY: setup demo test test-fast test-faults lab notebooks bench docs docs-serve clean-venv

$(VENV)/.ready: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[test,sweep]'
	$(PY) -m ipykernel install --sys-prefix --name medic --display-name "medic (.venv)" >/dev/null
	touch $@

# the optional features' extras: Lightning (the logger benchmark, medic.integrations.lightning), Ignite
# (medic.integrations.monai), TensorBoard and MLflow (medic export), Optuna (medic sweep)
$(VENV)/.bench-ready: $(VENV)/.ready
	$(PY) -m pip install --quiet -e '.[test,bench,export,sweep,lightning,monai-ignite,nrrd,docs]'
	touch $@

setup: $(VENV)/.ready
	mkdir -p metrics analysis log checkpoints results

demo: setup
	$(VENV)/bin/medic train $(DEMO_ARGS)
	$(VENV)/bin/medic analyze
	$(VENV)/bin/medic analyze --batch_metrics

test: setup $(VENV)/.bench-ready
	$(PY) -m pytest -q tests

# everything not marked slow, faults, browser, notebooks or slurm
FAST_MARKS := not slow and not faults and not browser and not notebooks and not slurm
test-fast: setup $(VENV)/.bench-ready
	$(PY) -m pytest -q -m "$(FAST_MARKS)" tests

test-faults: setup
	$(PY) -m pytest -q -m faults tests

# JupyterLab on the notebooks (their kernel finds the project root from notebooks/)
lab: setup
	cd notebooks && ../$(VENV)/bin/jupyter lab --ServerApp.root_dir=. $(if $(filter 0,$(shell id -u)),--allow-root)

# all four notebooks headless (papermill): a small training run, then monitor, analyse, compare
notebooks: setup
	$(PY) -m medic.notebooks run-all analysis/notebooks

bench: setup $(VENV)/.bench-ready
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

# the manual: MkDocs with the Material theme (the docs extra); --strict fails on a broken link or anchor
docs: setup $(VENV)/.bench-ready
	$(VENV)/bin/mkdocs build --strict

docs-serve: setup $(VENV)/.bench-ready
	$(VENV)/bin/mkdocs serve

clean-venv:
	rm -rf $(VENV)
