#!/usr/bin/env bash
# One prepared run on a borrowed GPU machine (docs/benchmarks.md, issue 9),
# results in $OUT. Sized to finish in under 8 minutes so that a rerun fits.
#
#   bash bench/pack_wheels.sh        # here, once: .whl/ with what the card's image lacks
#   device run: bash bench/gpu_run.sh   (carry [".whl"])
#   DRY_RUN=1 bash bench/gpu_run.sh  # on the CPU, at a tiny size, with the local venv
#
# 1. CUDA checks (fidelity, batch independence, compiled step, lucid transforms);
# 2. where the time goes (torch profiler, Lite0 lecture and lucid);
# 3. the engine against the literal lecture loop (4 cases, JSON);
# 4. the whole service on the card: Redis, moto's S3, one GPU worker and the
#    API; all 1000 Lite0 classes over HTTP to the atlas, against the engine
#    alone on the same units;
# 5. docs/results/gpu.json's content ($OUT/gpu.json).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DREAMFARM_CACHE=/tmp/dfcache
if [ -z "${DRY_RUN:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
  PY=python3
  UNITS=1000 STEPS=250 SIZE=224 ENGINE_ARGS=""
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
else
  PY=${PY:-.venv/bin/python}
  UNITS=8 STEPS=5 SIZE=64 ENGINE_ARGS="--literal-steps 2 --engine-steps 2 --batch 4 --precision float32"
fi
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" | tee -a "$OUT/gpu.txt"

if [ -z "${DRY_RUN:-}" ]; then
  timeout 150 $PY bench/cuda_checks.py 2>&1 | tee "$OUT/cuda_checks.txt"
  timeout 60 $PY bench/profile_step.py --batch 64 --out "$OUT/profile_lite0.md" > /dev/null 2>&1
  timeout 60 $PY bench/profile_step.py --batch 64 --recipe lucid --out "$OUT/profile_lite0_lucid.md" > /dev/null 2>&1
fi
timeout 180 $PY bench/engine_speed.py $ENGINE_ARGS --json "$OUT/engine.json" 2>&1 | tee "$OUT/engine.txt"
timeout 240 $PY bench/service_1000.py --units "$UNITS" --steps "$STEPS" --size "$SIZE" --s3 moto \
  --json "$OUT/service_1000.json" 2>&1 | tee "$OUT/service_1000.txt"
$PY bench/gpu_report.py --engine "$OUT/engine.json" --service "$OUT/service_1000.json" --out "$OUT/gpu.json"
