#!/usr/bin/env bash
# The whole test suite: lint, then pytest. The fixtures start (and stop) a real Kafka broker,
# a real PostgreSQL cluster and HTTP servers on 127.0.0.1; nothing needs to be running first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
