#!/usr/bin/env bash
# Set up .venv with the test dependencies and run the whole test suite (CPU, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
.venv/bin/python -m ruff check src tests benchmarks
.venv/bin/python -m pytest -q -n 2 "$@"
