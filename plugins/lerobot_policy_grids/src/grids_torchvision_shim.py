"""Let a CUDA-only torchvision wheel import on a CPU-only torch.

torchvision 0.28 (the release paired with torch 2.13) is published for Linux as a CUDA build. On a CPU torch its
compiled ops library does not load, so ``torchvision._meta_registrations`` fails at import when it registers fake
kernels for ``torchvision::nms`` / ``torchvision::qnms``, ops that were never defined. Defining the two op schemas
before torchvision is imported is enough: everything LeRobot uses (transforms, ResNet backbones) is pure Python.
Calling the NMS ops themselves still raises (no kernel), which is the honest outcome on this build.

:func:`install` puts a one-shot finder at the front of ``sys.meta_path`` that defines the schemas the first
time ``torchvision`` is imported and then steps aside, so interpreters that never import torchvision (pip, ruff)
pay nothing. ``scripts/setup_lerobot_env.sh`` writes a ``.pth`` file calling :func:`install` into the LeRobot
environment's site-packages.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

__all__ = ["define_torchvision_schemas", "install"]

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBS: list[Any] = []  # keep the Library objects alive: dropping them would undefine the ops


def define_torchvision_schemas() -> list[str]:
    """Define the ``torchvision::`` op schemas that are missing; return the names defined (idempotent)."""
    import torch

    missing = [name for name in _SCHEMAS if not _op_exists(torch, name)]
    if missing:
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            lib.define(_SCHEMAS[name])
        _LIBS.append(lib)
    return missing


def _op_exists(torch: Any, name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


class _TorchvisionSchemaFinder(importlib.abc.MetaPathFinder):
    """Runs :func:`define_torchvision_schemas` just before ``torchvision`` is first imported."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "torchvision":
            uninstall()
            try:
                define_torchvision_schemas()
            except Exception as exc:  # never block the import itself; torchvision's own error is clearer
                print(f"grids_torchvision_shim: could not define torchvision op schemas: {exc}", file=sys.stderr)
        return None  # let the regular finders load torchvision


def install() -> None:
    """Arm the finder (no-op if torchvision is already imported or the finder is armed)."""
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionSchemaFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionSchemaFinder())


def uninstall() -> None:
    """Remove the finder."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionSchemaFinder)]
