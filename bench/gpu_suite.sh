#!/usr/bin/env bash
# Prepared commands for a GPU session (rare, and then about 15 minutes of device time in all,
# the machine's start included, at most 10 minutes a command). First the bundled-model pipeline,
# then, if time is left, the zoo table; each writes result JSON with the device recorded, and
# logs, to $OUT (the device tool's output folder) or results/.
#
#   bash bench/gpu_prepare.sh          # here, first: .carry/ gets the data and Kornia
#   bash bench/gpu_suite.sh            # there (device run, carry [".carry"], timeout_s 600):
#                                      # teacher, student, bundle (about 8 min)
#   bash bench/gpu_suite.sh zoo        # there, if time is left: the zoo table (5 min)
#   bash bench/gpu_suite.sh --tiny     # anywhere, CPU, synthetic data: both, about a minute
#
# PYTHON (default python3) and DATA (default .carry/fer2013.zip) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
out=${OUT:-results}
stage=${1:-bundle}
case "$stage" in
  bundle | zoo | --tiny) ;;
  *) echo "usage: bash bench/gpu_suite.sh [bundle | zoo | --tiny]" >&2; exit 2 ;;
esac
mkdir -p "$out"
if [[ "$stage" == "--tiny" ]]; then
  "$py" bench/distill_pipeline.py --tiny --out "$out/distill-tiny" | tee "$out/distill-tiny.log"
  "$py" bench/zoo_table.py --tiny --device cpu --out "$out/zoo-tiny.json" | tee "$out/zoo-tiny.log"
  exit 0
fi
if ! "$py" -c "import kornia" 2> /dev/null; then  # the GPU image has none: gpu_prepare.sh's
  mkdir -p /tmp/ferkit-site
  tar xJf .carry/site-py312.tar.xz -C /tmp/ferkit-site
  export PYTHONPATH=$PYTHONPATH:/tmp/ferkit-site
fi
data=${DATA:-.carry/fer2013.zip}
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here')"
case "$stage" in
  bundle)  # ferkit-vgg width 64 (4 min), then ferkit-small width 32 distilled from it (2.5 min)
    "$py" bench/distill_pipeline.py --data "$data" --device cuda --out "$out" 2>&1 \
      | tee "$out/distill-gpu.log" ;;
  zoo)  # every entry at most 60 epochs or 20 s of training, one seed each
    "$py" bench/zoo_table.py --data "$data" --device cuda --epochs 60 --minutes 0.33 --seeds 1 \
      --batch-size 256 --out "$out/zoo-gpu.json" 2>&1 | tee "$out/zoo-gpu.log" ;;
esac
