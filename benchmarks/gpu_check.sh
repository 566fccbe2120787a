#!/usr/bin/env bash
# One call on a GPU machine (at most ~8 minutes): the CUDA tests, then benchmarks/gpu_bench.py
# on real CIFAR-10 (seconds per epoch, 1 seed and packed; the model's ceiling, eager and
# compiled; FLOP utilisation; the reference way side by side; the augmentation's share;
# inspect rt batched vs one at a time; the whole grid's projected wall time).
#
#   bash benchmarks/gpu_check.sh            # on the GPU box, from a copy of the working tree
#   bash benchmarks/gpu_check.sh --quick    # anywhere: the same code paths on the CPU, tiny, ~1-2 min
#
# Results (JSON and logs: gpu_bench.json, gpu_check.log, cuda_tests.log, gpu.txt) go to $OUT
# when set (the device tool's output folder), else to a new folder
# benchmarks/results/gpu-<UTC time>/ (--quick: benchmarks/results/quick/, git-ignored), so a
# run never overwrites the measurements kept in benchmarks/results/.
#
# Before the call, in the repository root (both folders are git-ignored; carry them):
#   mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.gz .data/   # the JPEG archive, 19 MB
#   the wheels of the packages the GPU image lacks, in .whl/ (benchmarks/README.md has the
#   exact `pip download` command; zarr and its dependencies are enough here, 2 MB).
# Without .data/ the benchmark runs on synthetic images (speed only); without .whl/ the
# project runs from PYTHONPATH=$PWD and the inspect part needs zarr to be installed.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=""
[[ "${1:-}" == "--quick" ]] && quick="--quick"
if [[ -n "$quick" ]]; then default_out=benchmarks/results/quick; rm -rf "$default_out"
else default_out=benchmarks/results/gpu-$(date -u +%Y%m%dT%H%M%SZ); fi
out=${OUT:-$default_out}
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1
echo "gpu_check $(date -u +%FT%TZ) ${quick:-full} on $(hostname)"

if ! python3 -c "import zarr" 2>/dev/null && compgen -G ".whl/*.whl" > /dev/null; then
    pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || echo "wheel install failed"
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1 \
    || echo "no nvidia-smi" > "$out/gpu.txt"

data=()
archive=${CIFAR_ARCHIVE:-.data/cifar10-jpeg.tar.gz}
if [[ -f "$archive" ]]; then
    rm -rf /tmp/cifar10-jpeg && mkdir -p /tmp/cifar10-jpeg && tar -xzf "$archive" -C /tmp/cifar10-jpeg
    data=(--data /tmp/cifar10-jpeg)
else
    echo "no $archive: synthetic images (speed only)"
fi

# the CUDA tests (skipped without a GPU), at most 2 minutes
timeout "${TEST_TIMEOUT_S:-120}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$out/cuda_tests.log" 2>&1
echo "cuda tests: $(tail -1 "$out/cuda_tests.log")"

# the benchmark: its own budget stops optional parts; the timeout is the hard stop
# GPU_BENCH_PARTS: only some parts, e.g. 'loop simclr pack 1,inspect,projection' (gpu_bench.py --parts)
timeout "${BENCH_TIMEOUT_S:-300}" python3 benchmarks/gpu_bench.py $quick "${data[@]}" --out "$out" \
    --parts "${GPU_BENCH_PARTS:-}" ${GPU_BENCH_ARGS:-}
echo "gpu_check done (exit $?): $out/gpu_bench.json"
