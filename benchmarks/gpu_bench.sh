#!/usr/bin/env bash
# The GPU path in one call (for a machine with an NVIDIA GPU, e.g. the one the device tool
# lends): installs wgen, prints per-step times of scratch and LoRA training and of one-step
# generation on the GPU (and the demo size on the CPU beside it), then runs a short bench
# whose fine-tuning actors hold the GPU. Everything it writes goes under $OUT (default
# /tmp/wgen_gpu_bench). About 5 minutes on one H100, most of it the install.
#
#     bash benchmarks/gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/wgen_gpu_bench}"
mkdir -p "$OUT"
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1
[ -x .venv/bin/wgen ] || { python3 -m venv .venv && .venv/bin/pip install -q -e .; }
# the actors ask for half a GPU each where there is one (two share it); none on a CPU machine,
# where an actor asking for a GPU would wait forever
if nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; then GPU=0.5 USE_GPU=true
else echo "no GPU here: the same steps on the CPU"; GPU=0 USE_GPU=false; fi

echo "== per-step times on the GPU (demo and cluster sizes)"
.venv/bin/python benchmarks/gpu_step_times.py --sizes demo cluster --steps 20 \
  --json "$OUT/step_times_gpu.json"
echo "== the demo size on the CPU, for the ratio"
CUDA_VISIBLE_DEVICES="" .venv/bin/python benchmarks/gpu_step_times.py --sizes demo --steps 10 \
  --json "$OUT/step_times_cpu.json"

echo "== a short bench with the fine-tuning on the GPU (tiny preset, one seed)"
RUN="$OUT/run"
.venv/bin/wgen pairs --preset tiny --out "$RUN"
.venv/bin/wgen collect --preset tiny --out "$RUN" --set collect.gpus_per_actor=$GPU
.venv/bin/wgen train --preset tiny --out "$RUN" --set train.use_gpu=$USE_GPU
time .venv/bin/wgen bench --preset tiny --out "$RUN" --set bench.gpus_per_actor=$GPU \
  --methods scratch,lora-zero,ridge,wgen-1
grep -A 8 "^## Headline" "$RUN/bench/report.md"
