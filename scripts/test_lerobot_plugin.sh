#!/usr/bin/env bash
# Set up .venv-lerobot (lerobot 0.4.4, CPU torch 2.13.0, grids-vla + the lerobot_policy_grids plugin), then run ruff
# and the plugin's tests in it. Offline apart from the package index; ~4-6 min from scratch on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_egl.sh
bash scripts/setup_lerobot_env.sh
VENV="$(cd "${LEROBOT_VENV:-.venv-lerobot}" && pwd)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 WANDB_MODE=disabled GRIDS_NO_SKIP=1
"$VENV/bin/ruff" check plugins/lerobot_policy_grids src/grids_vla/envs/libero/export_lerobot.py \
  src/grids_vla/envs/libero/cli.py benchmarks/lerobot
cd plugins/lerobot_policy_grids
"$VENV/bin/python" -m pytest -q tests "$@"
