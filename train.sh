#!/usr/bin/env bash
# Runs the three training stages in order: encoder alignment -> decoder alignment -> instruction tuning.
#   bash train.sh --preset tiny --data_root DIR --output_dir OUT [flags passed to every stage]
# leaves OUT/stage1, OUT/stage2, OUT/stage3; each stage starts from the previous stage's output.
# Per-stage overrides: STAGE1_ARGS, STAGE2_ARGS, STAGE3_ARGS (environment variables).
# Multi-GPU: LAUNCHER="accelerate launch --num_processes 8" bash train.sh ...
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
LAUNCHER=${LAUNCHER:-$PY}

output_dir=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --output_dir) output_dir="$2"; shift 2 ;;
    --output_dir=*) output_dir="${1#*=}"; shift ;;
    --stage|--stage=*|--init_from|--init_from=*)
      echo "train.sh: $1 is chosen per stage by train.sh itself; use train_m2ugen.py for one stage" >&2
      exit 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$output_dir" ]; then
  echo "train.sh: --output_dir is required" >&2
  exit 2
fi

prev=""
for stage in 1 2 3; do
  extra_var="STAGE${stage}_ARGS"
  init=()
  [ -n "$prev" ] && init=(--init_from "$prev")
  echo "== stage $stage -> $output_dir/stage$stage" >&2
  # shellcheck disable=SC2086
  $LAUNCHER train_m2ugen.py --stage "$stage" --output_dir "$output_dir/stage$stage" \
    "${init[@]}" "${args[@]}" ${!extra_var:-}
  prev="$output_dir/stage$stage"
done
echo "== done: $output_dir/stage3" >&2
