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
# Uses the `python` and `torchrun` on PATH (conda env, Docker's /opt/venv, an activated .venv);
# PYTHON / TORCHRUN override them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
TORCHRUN=${TORCHRUN:-torchrun}
NPROC=${NPROC:-$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))")}
exec "$TORCHRUN" --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="$NPROC" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  -m recsys.retrieval.sharded_two_tower "$@"
