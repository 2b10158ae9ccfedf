#!/usr/bin/env bash
# Create (or reuse) .venv and install GridS with the given extras. Usage: scripts/setup_env.sh [extras]
# torch is pinned first to the CPU build so no resolver step pulls a multi-GB CUDA wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
