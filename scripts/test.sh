#!/usr/bin/env bash
# Set up .venv with the test dependencies and run the whole test suite (CPU, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_egl.sh
bash scripts/setup_env.sh dev,flops,jax,libero,so101,train,tensorboard,video
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
export XLA_FLAGS="${XLA_FLAGS:---xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1}"
.venv/bin/python -m ruff check src tests benchmarks
GRIDS_NO_SKIP=1 .venv/bin/python -m pytest -q -n 2 "$@"
