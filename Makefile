# Two commands for a fresh machine (README.md):
#   make run    set up, prepare MovieLens-100K, train and evaluate the two-tower on CPU
#   make test   set up and run the test suite, the README's journeys included (what CI runs: .ci/run)
# and one more:
#   make serve  train, index and serve the default pipeline (seq two-tower + DLRM) on 127.0.0.1:8000
# Overrides: make run TRAIN_ARGS="trainer.max_epochs=2"   make serve SERVE_ARGS="port=8080 llm=smollm2"
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

TRAIN_ARGS ?=
SERVE_ARGS ?=
# where training runs go, as configs/paths/default.yaml says (RECSYS_OUTPUTS, else PROJECT_ROOT/outputs)
RUNS := $${RECSYS_OUTPUTS:-$${PROJECT_ROOT:-.}/outputs}/train
# torch threads for run/serve (your environment's OMP_NUM_THREADS wins). 1, because on 2 cores shared
# with other jobs 2 spinning OpenMP threads made the two-tower's epochs 3-9x slower than 1 thread.
OMP_NUM_THREADS ?= 1

.PHONY: setup run serve test test-fast baselines clean

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
	OMP_NUM_THREADS=$(OMP_NUM_THREADS) $(BIN)/python -m recsys.train experiment=ml100k/two_tower $(TRAIN_ARGS)

# The serving default (configs/pipeline/seq_ranked.yaml's journey): the sequential two-tower, its
# index, the DLRM ranker trained behind it, then the server in the foreground. Finished runs are
# reused (same config); the index is rebuilt from the best checkpoint (seconds).
serve: setup
	OMP_NUM_THREADS=$(OMP_NUM_THREADS) $(BIN)/python -m recsys.train experiment=ml100k/two_tower_seq $(TRAIN_ARGS)
	OMP_NUM_THREADS=$(OMP_NUM_THREADS) $(BIN)/python -m recsys.index run=$(RUNS)/ml100k-two_tower_seq-seed42 index=ivf_flat
	OMP_NUM_THREADS=$(OMP_NUM_THREADS) $(BIN)/python -m recsys.train experiment=ml100k/seq_dlrm $(TRAIN_ARGS)
	OMP_NUM_THREADS=$(OMP_NUM_THREADS) $(BIN)/python -m recsys.serve $(SERVE_ARGS)

baselines: setup
	$(BIN)/python scripts/run_baselines.py

test: $(TEST_STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests

test-fast: $(TEST_STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" tests

clean:
	rm -rf $(VENV) outputs multirun
