#!/usr/bin/env bash
# Set up .venv and run the main job on its embedded default (see README). Extra args go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh viz
.venv/bin/grids-vla demo "$@"
