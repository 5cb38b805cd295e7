#!/usr/bin/env bash
# The GPU path of deployment in one run: SmolLM2-135M bf16 CPT on CUDA through the deploy job,
# stop/resume exactness, the callback's step-time overhead, the proxy env on CUDA. Under 5 minutes on one
# GPU; without one it prints why it skipped and exits 0. Results: $OUT (or runs/gpu_check)/gpu_check.{json,md}.
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" benchmarks/gpu_check.py "$@"
