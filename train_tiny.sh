#!/usr/bin/env bash
# Alias of the documented command: bash train_tiny.sh DATA OUT [flags]
#   == bash train.sh --preset tiny --data_root DATA --output_dir OUT [flags]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash train_tiny.sh DATA_DIR OUT_DIR [flags]" >&2; exit 2; }
exec bash "$(dirname "$0")/train.sh" --preset tiny --data_root "$1" --output_dir "$2" "${@:3}"
