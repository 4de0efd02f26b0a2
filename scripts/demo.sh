#!/usr/bin/env bash
# The main job on a demo feed: installs what is missing, starts Kafka and PostgreSQL locally,
# migrates, trains a demo model on synthetic images when none is given, serves the demo images,
# ingests the demo feed and runs the detector worker. Ctrl-C stops it; add --once to process the
# feed and exit. Everything after the script name goes to `logowatch demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PYTHONUNBUFFERED=1
exec .venv/bin/logowatch demo "$@"
