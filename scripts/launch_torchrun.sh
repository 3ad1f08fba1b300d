#!/usr/bin/env bash
# Two-tower with torchrec-sharded tables over N processes (GPUs, or CPU/gloo for a check).
#   NPROC=8 scripts/launch_torchrun.sh --dataset-dir data/ml1m --device cuda --steps 2000 --save ckpt/tt
#   NPROC=2 scripts/launch_torchrun.sh --dataset-dir data/ml100k --steps 100 --device cpu   # CPU, gloo
#   scripts/launch_torchrun.sh --help                                                        # the job's options
# --device cuda gives each rank cuda:LOCAL_RANK (recsys.distributed.env); NPROC defaults to the GPU count.
# Several nodes: set NNODES, NODE_RANK and MASTER_ADDR on each (or run this under srun).
# Plans: table_wise/column_wise/data_parallel plan on CPU too; row_wise/table_row_wise are
# offered by torchrec only for CUDA and run on CPU here through recsys.distributed's sharder
# (--sharding row_wise). NCCL on GPU, gloo on CPU.
# The dataset must be prepared first (python -m recsys.data.prepare data=ml1m; ml1m downloads
# ml-1m.zip): the script checks <dataset-dir>/meta.json, and --device cuda, before spawning ranks.
# Uses the `python` and `torchrun` on PATH (conda env, Docker's /opt/venv, an activated .venv);
# PYTHON / TORCHRUN override them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
TORCHRUN=${TORCHRUN:-torchrun}
NPROC=${NPROC:-$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))")}
# Refuse here, once, what every rank would fail on: a dataset not prepared, --device cuda without CUDA.
DATASET="" DEVICE=""
for ((i = 1; i <= $#; i++)); do
  case "${!i}" in
    --dataset-dir) j=$((i + 1)); DATASET=${!j:-} ;;
    --dataset-dir=*) DATASET=${!i#--dataset-dir=} ;;
    --device) j=$((i + 1)); DEVICE=${!j:-} ;;
    --device=*) DEVICE=${!i#--device=} ;;
  esac
done
if [[ -n "$DATASET" && ! -f "$DATASET/meta.json" ]]; then
  NAME=$(basename "$DATASET")
  HOW="python -m recsys.data.prepare data=$NAME"
  [[ -f "configs/data/$NAME.yaml" ]] || HOW="python -m recsys.data.prepare data=<name> (configs/data/)"
  [[ "$NAME" == ml1m || "$NAME" == ml20m ]] && HOW="$HOW (downloads the MovieLens zip from grouplens.org)"
  echo "launch_torchrun: $DATASET/meta.json is missing: prepare the dataset first: $HOW" >&2
  exit 2
fi
if [[ "$DEVICE" == cuda* ]] && ! "$PYTHON" -c "import sys, torch; sys.exit(torch.cuda.device_count() == 0)"; then
  echo "launch_torchrun: --device $DEVICE but $PYTHON's torch sees no CUDA device (check nvidia-smi, the driver," \
       "a CUDA build of torch; CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}), or use --device cpu" >&2
  exit 2
fi
exec "$TORCHRUN" --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="$NPROC" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  -m recsys.retrieval.sharded_two_tower "$@"
