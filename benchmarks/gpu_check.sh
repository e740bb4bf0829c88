#!/usr/bin/env bash
# The GPU checks of the batched paths, in one command, for whoever has a CUDA device:
#   bash benchmarks/gpu_check.sh [python]
# 1. bench_md.py: per-material ASE MD against the batched MD (16 materials, 200 steps) on cuda;
# 2. bench_evaluate_workers.py: batched evaluation with graph-building workers, on cuda.
# The device reaches the second through SOFTENING_DEVICE; the script fails if either fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-.venv/bin/python}}"
export SOFTENING_DEVICE=cuda HF_HUB_OFFLINE=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
"$PY" benchmarks/bench_md.py --materials 16 --steps 200 --device cuda --json
"$PY" benchmarks/bench_evaluate_workers.py
