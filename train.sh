#!/usr/bin/env bash
# Runs the three training stages in order: encoder alignment -> decoder alignment -> instruction tuning.
#   bash train.sh --preset tiny --data_root DIR --output_dir OUT [flags passed to every stage]
# leaves OUT/stage1, OUT/stage2, OUT/stage3; each stage starts from the previous stage's output.
# Every training flag not given comes from the preset's recipe for that stage
# (llama/config.py: get_recipe; each stage prints its resolved settings).
# Frozen-encoder features and decoder targets are cached in OUT/feature_cache unless
# --feature_cache is given. Relative paths are relative to the caller's directory.
# --resume: skip stages whose checkpoint is complete, continue an interrupted one, run the rest.
# Per-stage overrides: STAGE1_ARGS, STAGE2_ARGS, STAGE3_ARGS (environment variables).
# Several processes (DDP; one per GPU, or CPU processes in one gloo group without CUDA):
#   NPROC=8 bash train.sh ...   runs each stage with
#                               python -m torch.distributed.run --standalone --nproc_per_node 8
#   LAUNCHER="torchrun --nnodes 2 ..." bash train.sh ...   (any launcher that runs a script)
# --batch_size is per process. Exact commands and what was tested: docs/TRAINING.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

PY=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3 )}
NPROC=${NPROC:-1}
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
  echo "train.sh: NPROC must be a positive integer, got '$NPROC'" >&2
  exit 2
fi
if [ -z "${LAUNCHER:-}" ]; then
  if [ "$NPROC" -gt 1 ]; then
    LAUNCHER="$PY -m torch.distributed.run --standalone --nproc_per_node $NPROC"
  else
    LAUNCHER=$PY
  fi
fi

output_dir=""
resume=0
cache_given=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --output_dir) output_dir="$2"; shift 2 ;;
    --output_dir=*) output_dir="${1#*=}"; shift ;;
    --resume) resume=1; shift ;;
    --resume=*)
      echo "train.sh: --resume takes no value (each stage resumes from its own folder)" >&2
      exit 2 ;;
    --stage|--stage=*|--init_from|--init_from=*)
      echo "train.sh: $1 is chosen per stage by train.sh itself; use train_m2ugen.py for one stage" >&2
      exit 2 ;;
    --feature_cache|--feature_cache=*) cache_given=1; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$output_dir" ]; then
  echo "train.sh: --output_dir is required" >&2
  exit 2
fi
[ "$cache_given" = 1 ] || args+=(--feature_cache "$output_dir/feature_cache")

# complete | partial | none: the state of a stage's output checkpoint.
stage_state() {
  "$PY" -c '
import sys
sys.path.insert(0, sys.argv[1])
from llama.checkpoint import CheckpointError, read_config
try:
    print("complete" if read_config(sys.argv[2]).get("complete") else "partial")
except CheckpointError:
    print("none")' "$here" "$1"
}

prev=""
for stage in 1 2 3; do
  dir="$output_dir/stage$stage"
  extra_var="STAGE${stage}_ARGS"
  init=()
  [ -n "$prev" ] && init=(--init_from "$prev")
  prev="$dir"
  cont=()
  if [ "$resume" = 1 ]; then
    case "$(stage_state "$dir")" in
      complete) echo "== stage $stage: $dir is complete, skipped" >&2; continue ;;
      partial) cont=(--resume) ;;
    esac
  fi
  echo "== stage $stage -> $dir${cont:+ (resumed)}" >&2
  # shellcheck disable=SC2086
  $LAUNCHER "$here/train_m2ugen.py" --stage "$stage" --output_dir "$dir" \
    "${init[@]}" "${cont[@]}" "${args[@]}" ${!extra_var:-}
  if [ "$(stage_state "$dir")" != complete ]; then
    echo "train.sh: stage $stage stopped before its last epoch; continue with: bash train.sh ... --resume" >&2
    exit 3
  fi
done
echo "== done: $output_dir/stage3" >&2
