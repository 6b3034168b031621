#!/usr/bin/env bash
# The GPU path, measured in one go (a lent GPU machine's time is short): localiser speed and
# memory at 160×512×512, then devset accuracy with the localiser on CUDA (virus spikes with
# and without explicit negatives; insitu ribosomes and microtubules).
#
#   bash benchmarks/gpu.sh [DEVSET_DIR] [OUT_DIR]      # defaults: ../shared/devset gpu-results
#   DEVICE=cpu THREADS=2 bash benchmarks/gpu.sh          # the same rows on the CPU
#
# Each step tees its output into OUT_DIR, so a run cut short keeps what finished.
set -uo pipefail
devset=${1:-../shared/devset}
out=${2:-gpu-results}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
threads=${THREADS:-8}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
$py benchmarks/localize.py --device "$device" --threads "$threads" --sizes 160x512x512 \
    2>&1 | tee "$out/speed.txt"
$py benchmarks/localize.py --device "$device" --threads "$threads" --stages infer \
    --sizes 256x1024x1024 2>&1 | tee -a "$out/speed.txt"
$py benchmarks/accuracy.py --dataset "$devset/virus" --target spike --rows dog,full \
    --ablations '{"with 7 negatives": {"negatives": 7}}' --device "$device" \
    --threads "$threads" --json "$out/virus.json" 2>&1 | tee "$out/virus.txt"
$py benchmarks/accuracy.py --dataset "$devset/insitu" --rows dog,full,fiber \
    --device "$device" --threads "$threads" --json "$out/insitu.json" 2>&1 | tee "$out/insitu.txt"
