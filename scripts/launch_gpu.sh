#!/usr/bin/env bash
# Two-tower on one GPU box: train, then index the run's best checkpoint (flat, IVF-Flat, IVF-PQ, HNSW).
#   scripts/launch_gpu.sh [extra Hydra overrides...]       ML-100K: experiment ml100k/two_tower
#   scripts/launch_gpu.sh data=ml1m trainer.max_epochs=30  data=NAME picks experiment NAME/two_tower
#   EXP=ml1m/two_tower scripts/launch_gpu.sh               the experiment by name
#   TRAINER=cpu scripts/launch_gpu.sh trainer.max_epochs=1  the same journey on a CPU machine
# Prepare the data first (python -m recsys.data.prepare data=NAME; ml1m downloads ml-1m.zip).
# faiss-gpu builds flat/IVF indices on the GPU (index.device=auto picks it when present).
# Uses the `python` on PATH (PYTHON overrides it); runs land in $RECSYS_OUTPUTS (default outputs/).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
PYTHON=${PYTHON:-python}
TRAINER=${TRAINER:-gpu}
if [[ -z "${EXP:-}" ]]; then  # data=NAME selects NAME's own two-tower experiment (its batch size, epochs, tags)
  EXP=ml100k/two_tower
  for arg in "$@"; do
    [[ "$arg" == data=* ]] || continue
    EXP="${arg#data=}/two_tower"
    [[ -f "configs/experiment/$EXP.yaml" ]] || {
      echo "launch_gpu: no configs/experiment/$EXP.yaml for $arg; set EXP=<experiment> to choose one" >&2; exit 2; }
  done
fi
echo "launch_gpu: experiment=$EXP trainer=$TRAINER"
LOG=$(mktemp -t launch_gpu.XXXXXX)
trap 'rm -f "$LOG"' EXIT
# The run directory is the one the training summary names ("run dir"), never a guess from a glob.
"$PYTHON" -m recsys.train experiment="$EXP" trainer="$TRAINER" "$@" | tee "$LOG"
RUN=$(sed -n 's/^  run dir  *//p' "$LOG" | tail -n 1)
[[ -n "$RUN" && -d "$RUN" ]] || { echo "launch_gpu: the training summary names no run dir (output above)" >&2; exit 1; }
for KIND in flat ivf_flat ivf_pq hnsw; do
  "$PYTHON" -m recsys.index run="$RUN" index="$KIND"
done
echo "run: $RUN"
