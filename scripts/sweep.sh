#!/usr/bin/env bash
# Launch an Optuna sweep (results grouped in W&B, offline by default; `wandb sync` later).
#   scripts/sweep.sh bpr_optuna ml100k/bpr [extra hydra overrides...]
#   scripts/sweep.sh two_tower_optuna ml100k/two_tower trainer=gpu hydra.sweeper.n_trials=50
# Uses the `python` on PATH (PYTHON overrides it).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/sweep.sh <hparams_search> <experiment> [overrides...]"
search=${1:?$usage}
experiment=${2:?$usage}
shift 2
exec "${PYTHON:-python}" -m recsys.train -m "hparams_search=$search" "experiment=$experiment" "$@"
