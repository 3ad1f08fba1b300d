#!/usr/bin/env bash
# Two-tower on one GPU box: train, index the best checkpoint, write the retrieval report.
#   scripts/launch_gpu.sh [extra Hydra overrides...]     e.g. data=ml1m trainer.max_epochs=30
# faiss-gpu builds flat/IVF indices on the GPU (index.device=auto picks it when present).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EXP=${EXP:-ml100k/two_tower}
$PY -m recsys.train experiment="$EXP" trainer=gpu "$@"
RUN=$(ls -td outputs/*two_tower*/*/ | head -1)
CKPT=$(ls "$RUN"/checkpoints/epoch_*.ckpt 2>/dev/null | head -1 || true)
CKPT=${CKPT:-$RUN/checkpoints/last.ckpt}
for KIND in flat ivf_flat ivf_pq hnsw; do
  $PY -m recsys.index ckpt="$CKPT" index="$KIND"
done
echo "run: $RUN"
