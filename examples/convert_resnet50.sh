#!/usr/bin/env bash
# Dry run, convert, load: the whole job in three commands.
# Usage: examples/convert_resnet50.sh [OUTPUT_DIR] [INPUT_SIZE]
set -euo pipefail
out="${1:-.}"
size="${2:-224}"

parc-convert resnet50 --stages 3,4 --input-size "$size" --dry-run
parc-convert resnet50 --stages 3,4 --input-size "$size" --output "$out/resnet50-parc.safetensors" --force
python -c "import parc_surgery, torch; m = parc_surgery.load('$out/resnet50-parc.safetensors').eval(); print('loaded:', type(m).__name__, tuple(m(torch.randn(1, 3, $size, $size)).shape))"
