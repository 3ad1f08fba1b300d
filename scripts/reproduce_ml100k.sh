#!/usr/bin/env bash
# Reproduce experiments/ml100k/README.md (the ML-100K paper-style table) with one command.
#   scripts/reproduce_ml100k.sh                 # CPU, seeds 0 1 2 (see experiments/ml100k/README.md for its wall time)
#   scripts/reproduce_ml100k.sh --quick --out /tmp/r
#   scripts/reproduce_ml100k.sh --gpu           # GPU box: trainer=gpu for every training run (the LLM rows: docs/gpu.md)
# All arguments go to scripts/reproduce_ml100k.py (see its --help).
# Uses the repository's .venv (make .venv/.installed) when there is one, else the `python` on PATH;
# PYTHON overrides both.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" WANDB_MODE="${WANDB_MODE:-offline}" HF_HUB_OFFLINE=1
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
exec "$PYTHON" scripts/reproduce_ml100k.py "$@"
