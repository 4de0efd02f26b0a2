#!/usr/bin/env bash
# Installs what a fresh machine lacks, idempotently: Debian's PostgreSQL server, Java 17 and
# Maven (for the Kafka broker's jars), Node.js and npm (for the backbone weights), a virtualenv
# in .venv with logowatch, and the nsfwjs Inception v3 weights imported once into
# ~/.cache/logowatch (real ImageNet-derived features without Keras' download host).
# `--test` adds what only the tests need: the dev and gpu-bench extras (pytest, ruff, PyTorch
# for the GPU check's dry run) and Chromium (the report's headless screenshot test).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=runtime
case "${1:-}" in
  "") ;;
  --test) mode=test ;;
  *) echo "bootstrap: unknown option ${1} (the only one is --test)" >&2; exit 2 ;;
esac

need_apt=()
if ! command -v pg_ctl >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
  need_apt+=(postgresql postgresql-contrib)
fi
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || need_apt+=(nodejs npm)
if [ "$mode" = test ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # the report's screenshot test
fi
ldconfig -p | grep -q 'libcairo\.so\.2' || need_apt+=(libcairo2)  # CairoSVG: SVG logos
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]} from Debian"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
# The stamp holds pyproject.toml's hash and what was installed: a test install serves the demo.
stamp=".venv/.logowatch-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$have" != "$want test" ] && [ "$have" != "$want $mode" ]; then
  echo "bootstrap: installing logowatch ($mode) and its dependencies into .venv (first time: minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # the distribution was called `logowatch` until that PyPI name turned out to be taken
  .venv/bin/python -m pip uninstall -y -q logowatch >/dev/null 2>&1 || true
  target=.
  # gpu-bench: PyTorch for the GPU check's dry-run test (tests/unit/test_gpu_check.py). PyPI
  # has no CPU-only torch: ~4.5 GB with its CUDA libraries, ~2.5 min (docs/benchmarks.md, GPU)
  [ "$mode" = test ] && target='.[dev,gpu-bench]'
  .venv/bin/python -m pip install -q -e "$target"
  echo "$want $mode" > "$stamp"
fi

if ! .venv/bin/logowatch weights show nsfwjs >/dev/null 2>&1; then
  echo "bootstrap: importing the nsfwjs Inception v3 weights with npm (first time: a minute)"
  .venv/bin/logowatch weights import nsfwjs
fi
