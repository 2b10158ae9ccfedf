#!/usr/bin/env bash
# Set up .venv-lerobot312 (lerobot 0.6.x on Python 3.12, what LeRobot users install today; see
# scripts/setup_lerobot312_env.sh), then run the lerobot_policy_grids plugin's whole suite in it: tests/ (smolvla_grids,
# act_grids, the LIBERO export, lerobot-train, lerobot-eval, the shim and the pi0/pi05 registration, the same files
# scripts/test_lerobot_plugin.sh runs on lerobot 0.4.4) and tests_py312/ (pi0_grids, pi05_grids built and trained
# with a tiny random PaliGemma). Two pytest runs, because each folder has its own conftest module. Where the two
# LeRobot versions differ, the tests assert what each must do; nothing is skipped by version, and GRIDS_NO_SKIP=1
# turns any skip into a failure. Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_egl.sh
bash scripts/setup_lerobot312_env.sh
VENV="$(cd "${LEROBOT312_VENV:-.venv-lerobot312}" && pwd)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 WANDB_MODE=disabled GRIDS_NO_SKIP=1
export MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
cd plugins/lerobot_policy_grids
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests_py312 "$@"
