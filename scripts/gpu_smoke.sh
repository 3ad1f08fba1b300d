#!/usr/bin/env bash
# First-run check of a fresh GPU box: one PASS/FAIL/SKIP line per check, expected output in docs/gpu.md.
#   scripts/gpu_smoke.sh                      # every check (~10 min on one GPU, +3 with two or more)
#   scripts/gpu_smoke.sh --only faiss,vllm    # some checks;  --list names them
#   scripts/gpu_smoke.sh --device cpu         # the CPU fallback of each check (how CI tests this script)
#   scripts/gpu_smoke.sh --out DIR            # keep logs and runs in DIR (default: a new temp dir)
# Uses the `python` / `torchrun` on PATH (PYTHON / TORCHRUN override); exit status 1 if any check failed.
set -uo pipefail
cd "$(dirname "$0")/.."

CHECKS=(versions fbgemm faiss pytest_gpu data two_tower dlrm_table_wise dlrm_row_wise two_tower_sharded vllm ddp)
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; echo "checks: ${CHECKS[*]}"; }

DEVICE=cuda ONLY="" OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE=${2:-}; shift 2 ;;
    --only) ONLY=${2:-}; shift 2 ;;
    --out) OUT=${2:-}; shift 2 ;;
    --list) printf '%s\n' "${CHECKS[@]}"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$DEVICE" == cuda || "$DEVICE" == cpu ]] || { echo "--device must be cuda or cpu, got '$DEVICE'" >&2; exit 2; }
for c in ${ONLY//,/ }; do
  [[ " ${CHECKS[*]} " == *" $c "* ]] || { echo "unknown check: $c (see --list)" >&2; exit 2; }
done

PY=${PYTHON:-python}
export TORCHRUN=${TORCHRUN:-torchrun} HF_HUB_OFFLINE=1 WANDB_MODE=offline OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
OUT=${OUT:-$(mktemp -d -t gpu_smoke.XXXXXX)}
mkdir -p "$OUT"
export RECSYS_DATA=${RECSYS_DATA:-$OUT/data}
if [[ "$DEVICE" == cuda ]]; then
  NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  TRAINER=gpu IDX_DEVICE=cuda
  if [[ "$NGPU" -eq 0 ]]; then  # every GPU check would fail for this one reason
    echo "gpu_smoke: --device cuda but $PY's torch sees no CUDA device" \
         "(torch $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -n 1);" \
         "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}): check nvidia-smi, the driver (>= 580 for CUDA 13)," \
         "a CUDA build of torch (requirements/gpu.txt), docker run --gpus all; or run --device cpu" >&2
    exit 1
  fi
else
  NGPU=0 TRAINER=cpu IDX_DEVICE=cpu
  export CUDA_VISIBLE_DEVICES=""
fi
NPROC=$(( NGPU > 0 ? NGPU : 2 ))
# SMOKE_TRAIN_ARGS: extra Hydra overrides for the training checks (tests pass a few-step limit).
export PY OUT DEVICE TRAINER IDX_DEVICE SMOKE_TRAIN_ARGS=${SMOKE_TRAIN_ARGS:-}
echo "gpu_smoke: device=$DEVICE gpus=$NGPU python=$(command -v "$PY") logs=$OUT"

PASSED=0 FAILED=0 SKIPPED=0
wanted() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }
skip() { wanted "$1" || return 0; printf 'SKIP  %-18s %s\n' "$1" "$2"; SKIPPED=$((SKIPPED + 1)); }
# check NAME TIMEOUT_S COMMAND...: PASS when the command exits 0 within the timeout.
check() {
  local name=$1 limit=$2; shift 2
  wanted "$name" || return 0
  local t0=$SECONDS
  # timeout signals the whole process group (torchrun's ranks too); functions run in a child bash
  if timeout -k 20 "$limit" bash -c '"$@"' "$name" "$@" > "$OUT/$name.log" 2>&1; then
    printf 'PASS  %-18s (%ss)\n' "$name" $((SECONDS - t0)); PASSED=$((PASSED + 1))
  else
    local rc=$?  # 124: the timeout
    printf 'FAIL  %-18s (%ss, exit %s)  log: %s\n' "$name" $((SECONDS - t0)) "$rc" "$OUT/$name.log"; FAILED=$((FAILED + 1))
    tail -n 5 "$OUT/$name.log" | sed 's/^/      /'
  fi
}
gpu_only() { [[ "$DEVICE" == cuda ]] || { skip "$1" "(needs --device cuda)"; return 1; }; }

two_tower_epoch() {  # one epoch with trainer=$TRAINER, then an IVF-PQ index on $IDX_DEVICE
  local extra; read -r -a extra <<< "$SMOKE_TRAIN_ARGS"
  "$PY" -m recsys.train experiment=ml100k/two_tower trainer="$TRAINER" trainer.max_epochs=1 logger=none \
      trainer.enable_progress_bar=false "hydra.run.dir=$OUT/two_tower" "${extra[@]}" &&
  "$PY" -m recsys.index "run=$OUT/two_tower" checkpoint=last index=ivf_pq "index.device=$IDX_DEVICE" \
      "out_dir=$OUT/two_tower/index" "hydra.run.dir=$OUT/two_tower/index_run" &&
  built_on "$OUT/two_tower/index/index.json" "$IDX_DEVICE"
}

built_on() {  # built_on INDEX_JSON DEVICE: the index records (index.json "built_on") that it was built on DEVICE
  "$PY" - "$1" "$2" <<'PY'
import json, sys
found = json.load(open(sys.argv[1])).get("built_on")
if found != sys.argv[2]:
    sys.exit(f"FAILED: {sys.argv[1]} says built_on={found!r}, expected {sys.argv[2]!r} (its log says why)")
print(f"{sys.argv[1]}: built_on={found}")
PY
}

pytest_ran() {  # pytest ARGS...: PASS only when pytest passes and ran tests (all skipped = not checked: FAIL)
  local res="$OUT/pytest.$$.txt" rc=0
  "$PY" -m pytest -q -rs -p no:cacheprovider "$@" > "$res" 2>&1 || rc=$?
  cat "$res"
  if [[ $rc -eq 0 ]] && ! tail -n 1 "$res" | grep -q " passed"; then
    echo "FAILED: no test ran, every one was skipped (the reasons are above)"; rc=1
  fi
  rm -f "$res"; return $rc
}

ddp_run() {  # Lightning DDP: two GPUs (trainer=ddp), or two CPU processes (trainer=ddp_sim)
  local trainer=ddp_sim devices=() extra; read -r -a extra <<< "$SMOKE_TRAIN_ARGS"
  [[ "$DEVICE" == cuda ]] && trainer=ddp devices=(trainer.devices=2)
  "$PY" -m recsys.train experiment=ml100k/bpr trainer=$trainer "${devices[@]}" trainer.max_epochs=1 logger=none \
      trainer.enable_progress_bar=false "hydra.run.dir=$OUT/ddp" "${extra[@]}" && test -s "$OUT/ddp/metrics.json"
}

checks() { "$PY" scripts/gpu_checks.py "$@" --device "$DEVICE"; }
export -f two_tower_epoch built_on pytest_ran ddp_run checks

check versions 120 checks versions
check fbgemm 300 checks fbgemm
check faiss 300 checks faiss
gpu_only pytest_gpu && check pytest_gpu 600 pytest_ran -m gpu tests --deselect tests/llm/test_vllm_backend.py
RUN_DDP=$([[ "$DEVICE" == cuda && "$NGPU" -lt 2 ]] && echo no || echo yes)
# data: for the checks that read ML-100K, only when one of them runs; its Hydra output stays under --out
if wanted data || wanted two_tower || wanted two_tower_sharded || { wanted ddp && [[ $RUN_DDP == yes ]]; }; then
  ONLY_SAVED=$ONLY; ONLY=""
  check data 600 "$PY" -m recsys.data.prepare data=ml100k "hydra.run.dir=$OUT/prepare"
  ONLY=$ONLY_SAVED
fi
check two_tower 900 two_tower_epoch
check dlrm_table_wise 600 checks dlrm-sharded --nproc "$NPROC" --sharding table_wise
check dlrm_row_wise 600 checks dlrm-sharded --nproc "$NPROC" --sharding row_wise
check two_tower_sharded 600 checks two-tower-sharded --nproc "$NPROC" --dataset-dir "$RECSYS_DATA/ml100k"
gpu_only vllm && check vllm 900 pytest_ran tests/llm/test_vllm_backend.py  # vllm missing: its tests skip -> FAIL
if [[ $RUN_DDP == no ]]; then skip ddp "(needs 2 GPUs, found $NGPU)"; else check ddp 600 ddp_run; fi

echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
[[ $FAILED -eq 0 ]]
