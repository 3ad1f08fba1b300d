#!/usr/bin/env bash
# Launch an Optuna sweep (results grouped in W&B, offline by default; `wandb sync` later).
#   scripts/sweep.sh bpr_optuna ml100k/bpr [extra hydra overrides...]
#   scripts/sweep.sh two_tower_optuna ml100k/two_tower trainer=gpu hydra.sweeper.n_trials=50
set -euo pipefail
cd "$(dirname "$0")/.."
search=${1:?usage: scripts/sweep.sh <hparams_search> <experiment> [overrides...]}
experiment=${2:?usage: scripts/sweep.sh <hparams_search> <experiment> [overrides...]}
shift 2
PY=${PY:-.venv/bin/python}
exec "$PY" -m recsys.train -m "hparams_search=$search" "experiment=$experiment" "$@"
