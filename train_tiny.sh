#!/usr/bin/env bash
# The tested recipe for the `tiny` preset on `python -m data.synthetic` data (CPU, a few minutes):
#   bash train_tiny.sh DATA_DIR OUT_DIR [extra flags for every stage]
# leaves OUT_DIR/stage1..3. `make demo` and tests/test_learning.py use exactly this.
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -lt 2 ]; then
  echo "usage: bash train_tiny.sh DATA_DIR OUT_DIR [flags]" >&2
  exit 2
fi
data=$1; out=$2; shift 2
export STAGE1_ARGS=${STAGE1_ARGS:-"--epochs 40 --lr 3e-3 --bridge_lr_scale 0.3"}
export STAGE2_ARGS=${STAGE2_ARGS:-"--epochs 15 --lr 3e-3 --replay 0.3"}
export STAGE3_ARGS=${STAGE3_ARGS:-"--epochs 20 --lr 3e-3 --replay 1.0 --mse_weight 0.3"}
exec bash train.sh --preset tiny --data_root "$data" --output_dir "$out" \
  --batch_size 16 --min_lr 1e-4 --warmup_epochs 0.5 --max_words 160 --audio_crop 0.5 \
  --feature_cache "$out/feature_cache" "$@"
