#!/usr/bin/env bash
# Set up .venv-lerobot (lerobot 0.4.4, CPU torch 2.13.0, grids-vla + the lerobot_policy_grids plugin), then run ruff
# and the plugin's tests/ in it (smolvla_grids, act_grids, export, lerobot-train, lerobot-eval, the torchvision shim,
# pi0_grids/pi05_grids registration and the early error that names the 0.6 environment). tests_py312/ (PI0 / PI0.5
# built and trained) needs lerobot >= 0.5 and runs in scripts/test_lerobot312_plugin.sh, with tests/ again, on
# lerobot 0.6.x. Offline apart from the package index; times are in .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_egl.sh
bash scripts/setup_lerobot_env.sh
VENV="$(cd "${LEROBOT_VENV:-.venv-lerobot}" && pwd)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 WANDB_MODE=disabled GRIDS_NO_SKIP=1
"$VENV/bin/ruff" check plugins/lerobot_policy_grids src/grids_vla/envs/libero/export_lerobot.py \
  src/grids_vla/envs/libero/cli.py benchmarks/lerobot
cd plugins/lerobot_policy_grids
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
