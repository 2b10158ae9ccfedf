#!/usr/bin/env bash
# Create (or reuse) .venv-lerobot: lerobot 0.4.4 on Python 3.11 with CPU torch 2.13.0, plus grids-vla and the
# lerobot_policy_grids plugin in editable mode. Idempotent and non-interactive.
#
# lerobot 0.4.4 pins torch < 2.8, so it is installed with --no-deps and its own dependency list (read from its
# metadata) is installed next with torch, torchvision and torchcodec held at the versions below by a constraints
# file. torch is installed first and by exact version so pip takes the CPU build available locally instead of
# resolving a multi-GB CUDA wheel. torchvision 0.28 is a CUDA-only build whose C++ ops are missing on CPU torch;
# a .pth hook (grids_tv_shim) defines the `torchvision::nms` schema before torchvision is imported.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LEROBOT_VENV:-.venv-lerobot}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
TORCH="${TORCH_VERSION:-2.13.0}"
TORCHVISION="${TORCHVISION_VERSION:-0.28.0}"
TORCHCODEC="${TORCHCODEC_VERSION:-0.13.0}"
LEROBOT="${LEROBOT_VERSION:-0.4.4}"
EXTRAS="${GRIDS_EXTRAS:-train,libero}"  # libero: LeRobot's LIBERO env for lerobot-eval

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip install --quiet)
CONSTRAINTS="$VENV/grids-lerobot-constraints.txt"
printf 'torch==%s\ntorchvision==%s\ntorchcodec==%s\nlerobot==%s\n' "$TORCH" "$TORCHVISION" "$TORCHCODEC" "$LEROBOT" \
  > "$CONSTRAINTS.tmp" && mv "$CONSTRAINTS.tmp" "$CONSTRAINTS"

# TORCH_PIP_ARGS: extra pip arguments for the torch install only (e.g. an index URL serving CPU wheels, where no
# local wheel is configured); word-split on purpose.
# shellcheck disable=SC2086
"${PIP[@]}" ${TORCH_PIP_ARGS:-} "torch==$TORCH"
"${PIP[@]}" --no-deps "torchvision==$TORCHVISION" "torchcodec==$TORCHCODEC" "lerobot==$LEROBOT"
# Requirements of an installed distribution: its base set plus the named extras (extras that point back at the same
# distribution, like lerobot[smolvla] -> lerobot[transformers-dep], are expanded), minus the packages pinned above.
deps() {
  "$VENV/bin/python" - "$@" <<'PY'
import re
import sys
from importlib.metadata import requires

dist, wanted = sys.argv[1], sys.argv[2:]
skip = {"torch", "torchvision", "torchcodec", "lerobot", "grids-vla", "lerobot-policy-grids"}
todo, seen, out = [None, *wanted], set(), []
while todo:
    extra = todo.pop()
    if extra in seen:
        continue
    seen.add(extra)
    for req in requires(dist) or []:
        req_extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", req)
        if (req_extra.group(1) if req_extra else None) != extra:
            continue
        name = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0].lower().replace("_", "-")
        if name == dist.lower().replace("_", "-"):  # self-reference: expand its extras
            todo.extend(re.search(r"\[([^\]]*)\]", req).group(1).replace(" ", "").split(","))
        elif name not in skip:  # keep platform markers of base requirements; pip evaluates them
            out.append(req.split(";")[0].strip() if extra else req)
print("\n".join(dict.fromkeys(out)))
PY
}
mapfile -t LEROBOT_DEPS < <(deps lerobot smolvla)
"${PIP[@]}" -c "$CONSTRAINTS" "${LEROBOT_DEPS[@]}"
"${PIP[@]}" -c "$CONSTRAINTS" -e ".[${EXTRAS}]"
# The plugin declares lerobot as a dependency, whose torch pin pip cannot ignore: install it without deps.
"${PIP[@]}" --no-deps -e plugins/lerobot_policy_grids
mapfile -t PLUGIN_DEPS < <(deps lerobot_policy_grids test)
"${PIP[@]}" -c "$CONSTRAINTS" "${PLUGIN_DEPS[@]}"
# Arm the torchvision op-schema shim at interpreter start (see plugins/lerobot_policy_grids/src/grids_torchvision_shim.py).
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf 'import grids_torchvision_shim; grids_torchvision_shim.install()\n' > "$SITE/grids_torchvision_shim.pth.tmp"
mv "$SITE/grids_torchvision_shim.pth.tmp" "$SITE/grids_torchvision_shim.pth"
"$VENV/bin/python" -c "import lerobot_policy_grids, lerobot, torchvision; print('lerobot', lerobot.__version__, 'torchvision', torchvision.__version__)"
