#!/usr/bin/env bash
# Build (or reuse) .venv-lerobot312 with scripts/setup_lerobot312_env.sh, run the PI0 / PI0.5 GridS tests
# (plugins/lerobot_policy_grids/tests_py312: offline, tiny random PaliGemma, CPU) and write versions, timings and
# test results to benchmarks/lerobot/pi0_py312_output.txt. Exits with pytest's status. CI runs the same tests (and
# the plugin's tests/) through scripts/test_lerobot312_plugin.sh; this script only records a run for the docs.
#
# Environment: OMP_NUM_THREADS (default 1), NICE (default 5), PI0_PY312_OUTPUT (output file), and the overrides
# of setup_lerobot312_env.sh (LEROBOT312_VENV, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="${LEROBOT312_VENV:-.venv-lerobot312}"
OUT="${PI0_PY312_OUTPUT:-benchmarks/lerobot/pi0_py312_output.txt}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export HF_HUB_OFFLINE=1 GRIDS_NO_SKIP=1  # a skipped test fails the run (tests_py312/conftest.py)
NICE_LEVEL="${NICE:-5}"
NICE=(nice -n "$NICE_LEVEL")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

SETUP_START=$(date +%s)
set +e
"${NICE[@]}" bash scripts/setup_lerobot312_env.sh > "$WORK/setup.log" 2>&1
SETUP_RC=$?
set -e
SETUP_S=$(( $(date +%s) - SETUP_START ))
if [ "$SETUP_RC" -ne 0 ]; then
  grep -v "is ignored: it is neither" "$WORK/setup.log" | tail -n 40 >&2
  echo "run_pi0_py312: environment setup failed (rc=$SETUP_RC)" >&2
fi

{
  echo "# PI0 / PI0.5 + GridS on Python 3.12 and lerobot 0.6.x (written by scripts/run_pi0_py312.sh)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(getconf _NPROCESSORS_ONLN) CPUs ($(uname -m)), no GPU used, OMP_NUM_THREADS=$OMP_NUM_THREADS, nice $NICE_LEVEL"
  echo "setup (scripts/setup_lerobot312_env.sh): rc=$SETUP_RC, $SETUP_S s this run; environment size $(du -sh "$VENV" 2>/dev/null | cut -f1)"
  echo "setup $(cat "$VENV/grids-first-build.txt" 2>/dev/null || echo "first build: not recorded")"
  echo "load average while testing (other jobs share the CPUs): $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "## versions"
  "$VENV/bin/python" - <<'PY' || echo "version probe failed"
import platform
from importlib.metadata import PackageNotFoundError, version

print(f"python {platform.python_version()}")
try:
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    print(f"torch.__version__ {torch.__version__} ({build}; cuda available: {torch.cuda.is_available()})")
except Exception as exc:  # noqa: BLE001
    print(f"torch import failed: {exc}")
for dist in ("torch", "torchvision", "lerobot", "transformers", "numpy", "safetensors", "grids-vla",
             "lerobot_policy_grids"):
    try:
        print(f"{dist} {version(dist)}")
    except PackageNotFoundError:
        print(f"{dist} (not installed)")
PY
  echo
  echo "## tests (plugins/lerobot_policy_grids/tests_py312)"
} > "$WORK/out.txt"

TEST_START=$(date +%s)
set +e
"${NICE[@]}" "$VENV/bin/python" -m pytest plugins/lerobot_policy_grids/tests_py312 -v -ra -p no:cacheprovider \
  --durations=5 >> "$WORK/out.txt" 2>&1
TEST_RC=$?
set -e
echo "tests: rc=$TEST_RC, $(( $(date +%s) - TEST_START )) s wall" >> "$WORK/out.txt"

# No machine-local absolute paths in the committed file.
mkdir -p "$(dirname "$OUT")"
sed -e "s#$ROOT/#./#g" -e "s#$ROOT#.#g" -e "s#$HOME/#~/#g" -e "s#${TMPDIR:-/tmp}/[^ :]*#<tmp>#g" \
  "$WORK/out.txt" > "$OUT"
cat "$OUT"
exit "$TEST_RC"
