#!/usr/bin/env bash
# Reproduce experiments/ml100k/README.md (the ML-100K paper-style table) with one command.
#   scripts/reproduce_ml100k.sh                 # CPU, seeds 0 1 2 (see experiments/ml100k/README.md for its wall time)
#   scripts/reproduce_ml100k.sh --quick --out /tmp/r
#   scripts/reproduce_ml100k.sh --gpu           # GPU box: trainer=gpu for every training run (the LLM rows: docs/gpu.md)
# All arguments go to scripts/reproduce_ml100k.py (see its --help).
# Runs the `python` on PATH (activate the environment first: README's quickstart); PYTHON overrides it.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" WANDB_MODE="${WANDB_MODE:-offline}" HF_HUB_OFFLINE=1
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import recsys, torchrec" 2>/dev/null; then
  echo "error: $PYTHON ($(command -v "$PYTHON" || echo 'not found')) cannot import recsys and torchrec:" \
       "activate the project's environment first (make .venv/.installed, then . .venv/bin/activate) or set PYTHON=/path/to/python" >&2
  exit 2
fi
exec "$PYTHON" scripts/reproduce_ml100k.py "$@"
