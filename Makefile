# Two commands for a fresh machine:
#   make run    set up, prepare MovieLens-100K, train and evaluate (CPU, a few minutes)
#   make test   set up and run the test suite (what CI runs)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast baselines clean

$(STAMP): pyproject.toml requirements/cpu.txt requirements/nodeps.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first from its exact pin, so nothing can pull a CUDA build of torch.
	$(BIN)/pip install -q -r requirements/cpu.txt
	$(BIN)/pip install -q -e '.[cpu,dev]'
	$(BIN)/pip install -q --no-deps -r requirements/nodeps.txt
	touch $(STAMP)

setup: $(STAMP)

run: setup
	OMP_NUM_THREADS=2 $(BIN)/python -m recsys.train experiment=ml100k/two_tower

baselines: setup
	$(BIN)/python scripts/run_baselines.py

test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests

test-fast: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" tests

clean:
	rm -rf $(VENV) outputs multirun
