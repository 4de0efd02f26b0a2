#!/usr/bin/env bash
# The benchmark on a machine with an NVIDIA GPU, in one command:
#
#   bash bench/gpu.sh                 # from the repository root
#   PYTHON=/path/to/python bash bench/gpu.sh --records 8192   # extra flags go to `python -m bench`
#
# What it does:
#   1. checks nvidia-smi sees a GPU;
#   2. makes sure TensorFlow sees it, installing tensorflow[and-cuda]==2.21.0 (the project's
#      `gpu` extra) into the interpreter's environment if not (needs PyPI once);
#   3. runs the model bound at batch 64-512 in the project's default precision (mixed float16
#      with XLA, see detector/model.py) and in bfloat16 (also XLA), the decode bound in one
#      process per core, and, when Java + Maven + PostgreSQL are there, end to end with the
#      broker and Postgres started by the same runners as the tests (workers/services.py);
#      without them it says so and runs the sections that need no services;
#   4. writes bench/results/gpu.json, bench/results/gpu.png and prints the table.
#
# The Kafka broker jars come from Maven Central on first use (cached in ~/.cache/logowatch, or
# LOGOWATCH_CACHE): copy that folder over first on a machine with no network.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else
    python3 -m venv .venv && PYTHON=.venv/bin/python
    "$PYTHON" -m pip install -q -e ".[gpu,dev]"
  fi
fi

if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; then
  echo "gpu.sh: nvidia-smi sees no GPU; run 'python -m bench' for the CPU benchmark" >&2
  exit 2
fi

sees_gpu() {
  TF_CPP_MIN_LOG_LEVEL=3 "$PYTHON" -c \
    "import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)"
}
if ! sees_gpu; then
  echo "gpu.sh: TensorFlow does not see the GPU; installing tensorflow[and-cuda]==2.21.0"
  "$PYTHON" -m pip install -q "tensorflow[and-cuda]==2.21.0"
  sees_gpu || { echo "gpu.sh: TensorFlow still sees no GPU (driver/CUDA mismatch?)" >&2; exit 2; }
fi

sections="model,decode,training,baseline,e2e,tiles,scaling"
missing=()
command -v java >/dev/null || missing+=(java)
if [[ ! -f "${LOGOWATCH_CACHE:-$HOME/.cache}/logowatch/kafka-4.4.0/.complete" \
      && ! -f "$HOME/.cache/logowatch/kafka-4.4.0/.complete" ]]; then
  command -v mvn >/dev/null || missing+=("mvn (or a copied Kafka jar cache)")
fi
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
  || missing+=("postgresql (initdb)")
if (( ${#missing[@]} )); then
  echo "gpu.sh: no ${missing[*]} here: running model, decode and training only" >&2
  sections="model,decode,training"
fi

mkdir -p bench/results
export TF_CPP_MIN_LOG_LEVEL=3 TF_FORCE_GPU_ALLOW_GROWTH=true
# Batch sizes are multiples of each other and of --records, so no timed batch is padded.
exec "$PYTHON" -m bench \
  --sections "$sections" \
  --precisions default,bfloat16 \
  --model-batch-sizes 64,128,256,512 \
  --e2e-batch-sizes 64,128,256 \
  --records 4096 --tile-records 1024 --baseline-records 200 \
  --latency-seconds 15 --min-seconds 5 --images 64 --head-embeddings 10000 \
  --out bench/results/gpu.json --chart bench/results/gpu.png \
  "$@"
