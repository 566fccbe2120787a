#!/usr/bin/env bash
# One script for a GPU machine: the CUDA tests, then every benchmark on the GPU.
# Everything lands as JSON/logs in ${OUT:-benchmarks/results/gpu}. Sized for ~8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" 2>&1
python3 -m pip install -q -e ".[dev]" > "$out/install.log" 2>&1 || true
python3 -m pytest -q tests/test_cuda.py tests/test_augment.py 2>&1 | tee "$out/cuda_tests.log" | tail -3
timeout 240 python3 benchmarks/bench_train.py --device cuda --batches 20 --warmup 3 --num-workers 8 \
    --out "$out/train_cuda.json" 2>&1 | tail -20
timeout 120 python3 benchmarks/bench_inspect.py --device cuda --probes 1024 --replays 10 \
    --checkpoints 6 --workers 8 --out "$out/inspect_cuda.json" 2>&1 | tail -5
echo "results in $out"
