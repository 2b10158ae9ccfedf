#!/usr/bin/env bash
# Set up .venv and run the main job on its embedded default (see README): GridS-16 vs dense on LIBERO tasks.
# Extra args go to `grids-vla demo` (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_egl.sh
bash scripts/setup_env.sh viz,libero,train,video
export MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
.venv/bin/grids-vla demo "$@"
