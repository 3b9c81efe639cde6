# `make demo` and `make test` do all the set-up on a fresh machine: a virtual environment in
# .venv, torch pinned first (so nothing can pull the multi-GB CUDA build), then this package.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lab clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# the gold-reward benchmark for SFT, DPO and HyPO (configs/gold/demo.yaml): table printed, plots in runs/demo/plots
demo: $(STAMP)
	$(VENV)/bin/hybridpo bench gold --config configs/gold/demo.yaml --out runs/demo

lab: $(STAMP)
	$(VENV)/bin/hybridpo lab all --out runs/lab

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf runs .pytest_cache
