#!/usr/bin/env bash
# One prepared command for a GPU session (they are rare and short: about 10 minutes of GPU
# time in all): the zoo table under a GPU budget, then the strongest recipe, each writing the
# same result JSON as the CPU runs with the device recorded. Logs and JSON go to $OUT (the
# device tool's output folder) or results/.
#
#   bash bench/gpu_suite.sh                  # on the GPU machine, data in .carry/fer2013.zip
#   bash bench/gpu_suite.sh --tiny           # anywhere, CPU, synthetic data, about a minute
#
# PYTHON (default python3) and DATA (default .carry/fer2013.zip) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
out=${OUT:-results}
mkdir -p "$out"
if [[ "${1:-}" == "--tiny" ]]; then
  "$py" bench/zoo_table.py --tiny --device cpu --out "$out/zoo-tiny.json" | tee "$out/zoo-tiny.log"
  exit 0
fi
data=${DATA:-.carry/fer2013.zip}
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here')"
# zoo: every entry at most 60 epochs or 20 s of training, one seed each (about 5 minutes)
"$py" bench/zoo_table.py --data "$data" --device cuda --epochs 60 --minutes 0.33 --seeds 1 \
  --batch-size 256 --out "$out/zoo-gpu.json" 2>&1 | tee "$out/zoo-gpu.log"
# the strongest recipe: ferkit-vgg at width 64, 100 epochs (about 4 minutes on an H200)
"$py" -m ferkit train --data "$data" --model ferkit-vgg --epochs 100 --batch-size 256 \
  --ema 0.999 --device cuda --json --out "$out/ferkit-vgg-100" > "$out/ferkit-vgg-100.json" \
  2> "$out/ferkit-vgg-100.log"
