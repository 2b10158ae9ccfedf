#!/usr/bin/env bash
# Create (or reuse) .venv-timm and run the timm adapter tests in it (tests_timm/). Extra arguments go to pytest.
#
# timm imports torchvision on `import timm`. The torchvision release paired with torch 2.13 (0.28) is a CUDA build
# whose compiled ops do not load on the CPU torch this project is tested with, and an unpinned `pip install timm`
# would replace that torch with a multi-GB CUDA one. So, as in scripts/setup_lerobot_env.sh: torch is installed first
# and by exact version, torchvision with --no-deps, everything else with a constraints file holding both, and a .pth
# hook runs the LeRobot plugin's torchvision shim (plugins/lerobot_policy_grids/src/grids_torchvision_shim.py, loaded
# from its file; the plugin itself is not installed) so the `torchvision::nms` schema exists before torchvision loads.
#
# Setup is skipped when the venv was completed by the same script with the same versions (a stamp file records
# them); TIMM_REINSTALL=1 forces it. grids-vla is installed editable, so source changes need no reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TIMM_VENV:-.venv-timm}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
TORCH="${TORCH_VERSION:-2.13.0}"
TORCHVISION="${TORCHVISION_VERSION:-0.28.0}"
TIMM="${TIMM_VERSION:-1.0.31}"
SHIM="plugins/lerobot_policy_grids/src/grids_torchvision_shim.py"

STAMP="$VENV/grids-timm-stamp.txt"
WANT="$(printf 'torch==%s torchvision==%s timm==%s\n' "$TORCH" "$TORCHVISION" "$TIMM"; cat "$0" pyproject.toml "$SHIM")"
WANT="$(printf '%s' "$WANT" | sha256sum | cut -d' ' -f1)"
if [ "${TIMM_REINSTALL:-0}" = 1 ] || [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  rm -f "$STAMP"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    printf '*\n' > "$VENV/.gitignore"  # keep the venv out of git status
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  PIP=("$VENV/bin/python" -m pip install --quiet)
  CONSTRAINTS="$VENV/grids-timm-constraints.txt"
  printf 'torch==%s\ntorchvision==%s\ntimm==%s\n' "$TORCH" "$TORCHVISION" "$TIMM" > "$CONSTRAINTS"
  # TORCH_PIP_ARGS: extra pip arguments for the torch install only (e.g. an index serving CPU wheels); word-split.
  # shellcheck disable=SC2086
  "${PIP[@]}" ${TORCH_PIP_ARGS:-} "torch==$TORCH"
  "${PIP[@]}" --no-deps "torchvision==$TORCHVISION"
  # torchvision again, now with its dependencies (numpy, pillow), and timm's (pyyaml, huggingface_hub, safetensors).
  "${PIP[@]}" -c "$CONSTRAINTS" "torchvision==$TORCHVISION" "timm==$TIMM"
  "${PIP[@]}" -c "$CONSTRAINTS" -e ".[dev]"
  # Arm the shim at interpreter start. It is loaded from the plugin's file, so nothing else of the plugin is importable.
  SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  SHIM_ABS="$(cd "$(dirname "$SHIM")" && pwd)/$(basename "$SHIM")"
  printf '%s\n' "import importlib.util as u, sys; s = u.spec_from_file_location('grids_torchvision_shim', '$SHIM_ABS'); m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); m.install()" \
    > "$SITE/grids_torchvision_shim.pth.tmp"
  mv "$SITE/grids_torchvision_shim.pth.tmp" "$SITE/grids_torchvision_shim.pth"
  "$VENV/bin/python" -c "import timm, torch, torchvision; print('timm', timm.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__)"
  printf '%s\n' "$WANT" > "$STAMP"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests_timm "$@"
