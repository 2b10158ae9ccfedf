#!/usr/bin/env bash
# Headless MuJoCo rendering (LIBERO) needs Mesa's EGL: present on most images, installed from Debian if not.
set -euo pipefail
if ldconfig -p | grep -q libEGL_mesa; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  echo "Mesa EGL is missing: install libegl1 libegl-mesa0 libgl1-mesa-dri libglvnd0 (needs root)" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libglvnd0
