#!/usr/bin/env bash
# One prepared GPU run (fits a 15-minute device budget; nothing downloads; CIFAR-10 need not be there):
# training images/s of every he2015-cifar10 net in fp32 / channels_last / bf16, the preset's projected
# wall time on this GPU (one run at a time, and all at once as the study runs them), and a one-process DDP
# (nccl) smoke, and GradientMonitor under torch.cuda.set_sync_debug_mode("error") (gpu_nosync.py).
# Figures go to $OUT/gpu.json (and $OUT/gpu_nosync.json) when OUT is set.
#   bash benchmarks/gpu.sh              # from the repository root, on the GPU machine
#   bash benchmarks/gpu.sh --quick      # a 1-minute version (also runs on the CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's resgrad, installed or not
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.version.cuda)'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
# GradientMonitor with every quantity on, under torch.cuda.set_sync_debug_mode("error") (issue 22).
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  timeout 120 "$PY" benchmarks/gpu_nosync.py || echo "gpu_nosync: FAILED"
fi
# The framework callbacks under fp16 + GradScaler (HF Trainer, Lightning): about 1 minute.
if [ "${1:-}" != "--quick" ]; then timeout 120 "$PY" benchmarks/gpu_integrations.py || echo "gpu_integrations: FAILED"; fi
exec timeout "${GPU_TIMEOUT:-540}" "$PY" benchmarks/gpu.py "$@"
