# Two commands for a fresh machine:
#   make run    set up, prepare MovieLens-100K, train and evaluate (CPU, a few minutes)
#   make test   set up and run the test suite (what CI runs)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: setup run test test-fast baselines clean

$(STAMP): pyproject.toml requirements/cpu.txt requirements/nodeps.txt requirements/data.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first from its exact pin, so nothing can pull a CUDA build of torch.
	$(BIN)/pip install -q -r requirements/cpu.txt
	$(BIN)/pip install -q -e '.[cpu,dev]'
	$(BIN)/pip install -q --no-deps -r requirements/nodeps.txt
	touch $(STAMP)

# The test suite also starts a real llama.cpp OpenAI-compatible server (built from source once;
# GGML_NATIVE=OFF keeps the build portable across CPUs).
$(TEST_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install -q -e '.[cpu,dev,llm-server]'
	touch $(TEST_STAMP)

setup: $(STAMP)

run: setup
	OMP_NUM_THREADS=2 $(BIN)/python -m recsys.train experiment=ml100k/two_tower

baselines: setup
	$(BIN)/python scripts/run_baselines.py

test: $(TEST_STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests

test-fast: $(TEST_STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" tests

clean:
	rm -rf $(VENV) outputs multirun
