#!/usr/bin/env bash
# Create (or reuse) .venv-lerobot312: Python 3.12 with lerobot 0.6.x (the release LeRobot users install today),
# grids-vla[train,libero] and the lerobot_policy_grids plugin with its test extra, in editable mode. What CI runs the
# plugin's whole suite in (scripts/test_lerobot312_plugin.sh), beside lerobot 0.4.4 in .venv-lerobot.
# Idempotent and non-interactive: a second run only re-checks the pins (seconds).
# lerobot extras: `pi` (transformers 5.x + scipy: what PI0/PI05 need), `smolvla` (num2words, which the SmolVLM
# processor imports) and `training` (datasets, accelerate, wandb, av, torchcodec: what `lerobot-train` imports);
# grids-vla's `libero` extra brings the LIBERO simulator that LeRobot's own LIBERO env (`lerobot-eval`) imports.
#
# Why a second LeRobot environment: lerobot 0.4.4 (Python 3.11, .venv-lerobot) runs PI0/PI05 only with an
# unpublished transformers fork; lerobot 0.5+ uses released transformers 5.x but requires Python >= 3.12 and
# torch < 2.12. The newest torch it accepts is 2.11.x, whose PyPI Linux wheel is a CUDA build (it runs on CPU):
# the first build downloads torch (~0.9 GB) plus its nvidia-* runtime wheels (several GB in all; about 6 GB for the
# whole environment; build times are in .ci/run). Where PyTorch's own CPU wheel index is reachable, set
# TORCH_INDEX_URL to it: torch/torchvision then come as the much smaller `+cpu` build (a local version label
# sorts above the plain release, so pip prefers it; untested here, that index is not reachable from this machine).
#
# Environment overrides: PYTHON (a Python 3.12 interpreter), LEROBOT312_VENV, LEROBOT_SPEC, LEROBOT_EXTRAS,
# TORCH_SPEC, TORCHVISION_SPEC, TORCH_INDEX_URL (an extra index for torch and torchvision only), GRIDS_EXTRAS.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
VENV="${LEROBOT312_VENV:-.venv-lerobot312}"
LEROBOT_SPEC="${LEROBOT_SPEC:->=0.6,<0.7}"
LEROBOT_EXTRAS="${LEROBOT_EXTRAS:-pi,smolvla,training}"
GRIDS_EXTRAS="${GRIDS_EXTRAS:-train,libero,so101}"
TORCH_SPEC="${TORCH_SPEC:->=2.11,<2.12}"
TORCHVISION_SPEC="${TORCHVISION_SPEC:->=0.26,<0.27}"

find_python312() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  # A pyenv shim for python3.12 may exist without the version being selected, so the command must run.
  if command -v python3.12 >/dev/null && python3.12 -c '' 2>/dev/null; then command -v python3.12; return; fi
  if command -v pyenv >/dev/null; then
    local v
    v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V | tail -n 1 || true)
    if [ -n "$v" ] && [ -x "$(pyenv root)/versions/$v/bin/python" ]; then
      echo "$(pyenv root)/versions/$v/bin/python"; return
    fi
  fi
  echo "error: no Python 3.12 found; set PYTHON=/path/to/python3.12 (pyenv install 3.12 works)" >&2
  exit 1
}

FRESH=0
if [ ! -x "$VENV/bin/python" ]; then
  FRESH=1
  PY=$(find_python312)
  "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' \
    || { echo "error: $PY is not Python 3.12" >&2; exit 1; }
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

CONSTRAINTS="$VENV/grids-lerobot312-constraints.txt"
printf 'torch%s\ntorchvision%s\nlerobot%s\n' "$TORCH_SPEC" "$TORCHVISION_SPEC" "$LEROBOT_SPEC" > "$CONSTRAINTS.tmp"
mv "$CONSTRAINTS.tmp" "$CONSTRAINTS"
PIP=("$VENV/bin/python" -m pip install --quiet --progress-bar off -c "$CONSTRAINTS")

TORCH_INDEX=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then TORCH_INDEX=(--extra-index-url "$TORCH_INDEX_URL"); fi
"${PIP[@]}" "${TORCH_INDEX[@]}" "torch$TORCH_SPEC" "torchvision$TORCHVISION_SPEC"
"${PIP[@]}" "lerobot[$LEROBOT_EXTRAS]$LEROBOT_SPEC" "pytest>=8"
"${PIP[@]}" -e ".[$GRIDS_EXTRAS]" -e "plugins/lerobot_policy_grids[test]"

"$VENV/bin/python" - <<'PY'
import platform

import lerobot
import torch
import transformers

print(f"python {platform.python_version()} torch {torch.__version__} lerobot {lerobot.__version__} "
      f"transformers {transformers.__version__}")
PY
SUMMARY="$VENV ready in $(( $(date +%s) - START )) s ($(du -sh "$VENV" | cut -f1))"
if [ "$FRESH" = 1 ]; then  # kept for scripts/run_pi0_py312.sh, which reports the cost of the first build
  echo "first build $(date -u +%Y-%m-%d): $SUMMARY" > "$VENV/grids-first-build.txt"
fi
echo "setup_lerobot312_env: $SUMMARY"
