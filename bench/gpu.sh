#!/usr/bin/env bash
# The GPU check, in one command, on a machine with PyTorch and an NVIDIA GPU (no TensorFlow,
# no network needed). First, here (TensorFlow, any machine):
#
#   python -m bench.gpu_export --model BUNDLE --out build/gpu-check
#
# then on the GPU machine, from the repository root, with build/gpu-check copied there:
#
#   bash bench/gpu.sh                  # JSON: $OUT/gpu-check.json (OUT defaults to build/gpu-check)
#   bash bench/gpu.sh --dry-run        # the same steps on the CPU at tiny sizes, here, first
#
# Extra flags go to `python -m bench.gpu_check` (--help lists them). What it measures and the
# device call that runs it: docs/benchmarks.md, "GPU".
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [[ " $* " != *" --dry-run "* ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "gpu.sh: no answer from nvidia-smi; PyTorch decides whether there is a GPU" >&2
fi
out="${OUT:-build/gpu-check}/gpu-check.json"
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m bench.gpu_check --out "$out" "$@"
