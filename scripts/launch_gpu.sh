#!/usr/bin/env bash
# Two-tower on one GPU box: train, index the best checkpoint, write the retrieval report.
#   scripts/launch_gpu.sh [extra Hydra overrides...]     e.g. data=ml1m trainer.max_epochs=30
#   TRAINER=cpu scripts/launch_gpu.sh trainer.max_epochs=1    # the same journey on a CPU machine
# faiss-gpu builds flat/IVF indices on the GPU (index.device=auto picks it when present).
# Uses the `python` on PATH (PYTHON overrides it); runs land in $RECSYS_OUTPUTS (default outputs/).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
PYTHON=${PYTHON:-python}
EXP=${EXP:-ml100k/two_tower}
TRAINER=${TRAINER:-gpu}
OUT=${RECSYS_OUTPUTS:-outputs}
"$PYTHON" -m recsys.train experiment="$EXP" trainer="$TRAINER" "$@"
RUN=$(ls -td "$OUT"/*two_tower*/*/ | head -1)
CKPT=$(ls "$RUN"/checkpoints/epoch_*.ckpt 2>/dev/null | head -1 || true)
CKPT=${CKPT:-$RUN/checkpoints/last.ckpt}
for KIND in flat ivf_flat ivf_pq hnsw; do
  "$PYTHON" -m recsys.index ckpt="$CKPT" index="$KIND"
done
echo "run: $RUN"
