"""A scripted pick-and-place expert for LIBERO that reads privileged simulator state.

Why: the official LIBERO demonstrations cannot be downloaded here, so training data comes from this expert. It reads
the task's goal predicates from the parsed BDDL problem, and for every ``In``/``On`` goal (several in sequence for
libero_10) it grasps the object and puts it over the target. Object extents come from the world-frame bounding box of
the object's collision geoms; the grasp yaw closes the fingers across the footprint's short axis; objects wider than
the gripper (bowls) are grasped at the rim nearest the hand, or at the raised rim when they lean (``TILT_LIMIT``).
Actions are LIBERO's OSC_POSE deltas produced by a proportional controller. Goals of other kinds (open/close, turn
on/off) are not solvable by this expert and are reported by :func:`unsupported_goals`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .task_env import subtree_bodies

PICK_PLACE_PREDICATES = ("in", "on")
GRIPPER_MAX_WIDTH = 0.07  # objects wider than this along their short axis are grasped at the rim
POS_SCALE = 0.05  # OSC_POSE maps action 1.0 to 5 cm
ROT_SCALE = 0.5  # and to 0.5 rad
HAND_HALF = (0.11, 0.035)  # hand collision footprint half-sizes (along, across the finger axis), metres
HAND_BOTTOM = 0.024  # the hand starts this far above the grip site
# rad; an object leaning more than this (spatial 5: the bowl slid off the ramekin, ~0.6 rad) is grasped at its raised
# rim; bowls resting in the cabinet's top layer lean up to ~0.25 rad and keep the ordinary rim grasp
TILT_LIMIT = 0.4


def goal_predicates(env: Any) -> list[list[str]]:
    """The task's goal as a list of ``[predicate, arg1, arg2...]`` (lower-case), from the parsed BDDL problem."""
    return [[str(t).lower() for t in g] for g in env.env.parsed_problem["goal_state"]]


def unsupported_goals(env: Any) -> list[list[str]]:
    """Goals this expert cannot achieve (anything but In / On between an object and a target)."""
    return [g for g in goal_predicates(env) if g[0] not in PICK_PLACE_PREDICATES or len(g) != 3]


def goal_satisfied(env: Any, goal: list[str]) -> bool:
    """Evaluate one goal predicate with LIBERO's own predicate functions."""
    from libero.libero.envs.predicates import eval_predicate_fn

    states = env.env.object_states_dict
    return bool(eval_predicate_fn(goal[0], *[states[a] for a in goal[1:]]))


# ----------------------------------------------------------------------------------------------------------- geometry


def _collision_corners(env: Any, name: str) -> np.ndarray:
    """World-frame corners (k, 3) of the bounding boxes of the collision geoms of object/fixture ``name``."""
    sim = env.sim
    model, data = sim.model._model, sim.data._data
    root = env.env.obj_body_id[name]
    bodies = subtree_bodies(model, root)
    geoms = np.flatnonzero(np.isin(model.geom_bodyid, bodies) & ((model.geom_contype | model.geom_conaffinity) != 0))
    if len(geoms) == 0:  # fall back to every geom of the object
        geoms = np.flatnonzero(np.isin(model.geom_bodyid, bodies))
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    out = []
    for g in geoms:
        centre, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
        local = centre[None] + signs * half[None]
        rot = data.geom_xmat[g].reshape(3, 3)
        out.append(data.geom_xpos[g][None] + local @ rot.T)
    return np.concatenate(out, axis=0)


@dataclass
class Extent:
    """Axis-aligned world extent of an object plus its footprint's principal axes."""

    lo: np.ndarray
    hi: np.ndarray
    centre_xy: np.ndarray
    short_axis: np.ndarray  # unit xy vector across the footprint's short side
    short_half: float
    long_half: float


def object_extent(env: Any, name: str) -> Extent:
    """Bounding box and footprint principal axes of object ``name`` in the world frame."""
    pts = _collision_corners(env, name)
    lo, hi = pts.min(0), pts.max(0)
    xy = pts[:, :2]
    centre = xy.mean(0)
    cov = np.cov((xy - centre).T) + 1e-12 * np.eye(2)
    _vals, vecs = np.linalg.eigh(cov)
    short = vecs[:, 0]
    proj_s = (xy - centre) @ short
    proj_l = (xy - centre) @ vecs[:, 1]
    mid = centre + short * (proj_s.max() + proj_s.min()) / 2 + vecs[:, 1] * (proj_l.max() + proj_l.min()) / 2
    return Extent(lo, hi, mid, short, float(np.ptp(proj_s) / 2), float(np.ptp(proj_l) / 2))


def object_tilt(env: Any, name: str) -> float:
    """Angle (rad) between object ``name``'s body z axis and the world vertical."""
    xmat = np.asarray(env.sim.data.body_xmat[env.env.obj_body_id[name]]).reshape(3, 3)
    return float(np.arccos(np.clip(xmat[2, 2], -1.0, 1.0)))


def target_point(env: Any, target: str) -> tuple[np.ndarray, float]:
    """(xy to place over, top z to clear) for a goal target: a region site or an object/fixture body."""
    e = env.env
    if target in e.object_sites_dict:
        xy = np.array(env.sim.data.get_site_xpos(target)[:2])
        parent = e.object_states_dict[target].parent_name
        top = (
            object_extent(env, parent).hi[2]
            if parent in e.obj_body_id
            else float(env.sim.data.get_site_xpos(target)[2])
        )
        return xy, float(top)
    xy = np.array(env.sim.data.body_xpos[e.obj_body_id[target]][:2])
    return xy, float(object_extent(env, target).hi[2])


# --------------------------------------------------------------------------------------------------------- rotations


def _rotvec(r: np.ndarray) -> np.ndarray:
    """Axis-angle vector of rotation matrix ``r``."""
    cos = np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    n = np.linalg.norm(axis)
    if n < 1e-9:  # angle ~ pi: axis from the symmetric part
        w, v = np.linalg.eigh((r + r.T) / 2)
        return v[:, np.argmax(w)] * angle
    return axis / n * angle


def _rot_z(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _wrap_half_pi(a: float) -> float:
    """Wrap an angle to [-pi/2, pi/2): a parallel-jaw grasp is symmetric under a half turn."""
    return float((a + np.pi / 2) % np.pi - np.pi / 2)


# ------------------------------------------------------------------------------------------------------------ expert


class ScriptedExpert:
    """Closed-loop pick-and-place policy over privileged state; call :meth:`act` once per control step.

    Phases per goal: hover above the grasp point, descend, close, lift until the object clears the target, move over
    the target, lower, open, retreat. A phase that does not converge within its step budget moves on, so a failed
    attempt ends in bounded time; success is judged by LIBERO's own predicates.
    """

    def __init__(self, env: Any, rng: np.random.Generator | None = None) -> None:
        bad = unsupported_goals(env)
        if bad:
            raise NotImplementedError(f"scripted expert cannot solve goals {bad} of task {env.task_name!r}")
        self.env = env
        self.goals = goal_predicates(env)
        self.rng = rng
        self.goal_index = 0
        self.phase = "settle"
        self.phase_steps = 0
        self.finished = False
        self._r_start: np.ndarray | None = None
        self._plan: dict[str, Any] = {}

    # state readers
    def _eef(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.env.env.robots[0]
        sid = r.eef_site_id
        return np.array(self.env.sim.data.site_xpos[sid]), np.array(self.env.sim.data.site_xmat[sid]).reshape(3, 3)

    def _finger_yaw(self) -> float:
        m = self.env.sim.model
        d = self.env.sim.data
        left = d.body_xpos[m.body_name2id("gripper0_leftfinger")]
        right = d.body_xpos[m.body_name2id("gripper0_rightfinger")]
        v = right[:2] - left[:2]
        return float(np.arctan2(v[1], v[0]))

    def _action(self, pos_target: np.ndarray, grip: float, rot_target: np.ndarray | None) -> np.ndarray:
        pos, rot = self._eef()
        a = np.zeros(7)
        a[:3] = np.clip((pos_target - pos) / POS_SCALE, -1.0, 1.0)
        if rot_target is not None:
            a[3:6] = np.clip(_rotvec(rot_target @ rot.T) / ROT_SCALE, -1.0, 1.0)
        a[6] = grip
        return a

    def _set_phase(self, name: str) -> None:
        self.phase, self.phase_steps = name, 0

    def _obstacles(self, obj: str, target: str) -> list[np.ndarray]:
        """Collision-box corners of every other movable object (and the target) that the hand could hit."""
        e = self.env.env
        names = [n for n in e.objects_dict if n != obj]
        parent = e.object_states_dict[target].parent_name if target in e.object_sites_dict else target
        if parent in e.obj_body_id and parent not in names:
            names.append(parent)
        return [_collision_corners(self.env, n) for n in names]

    @staticmethod
    def _clearance(grasp: np.ndarray, axis: np.ndarray, obstacles: list[np.ndarray]) -> float:
        """Smallest horizontal gap between the hand/fingers (as rectangles in the grasp frame) and any obstacle
        tall enough to reach them; negative means a predicted collision."""
        perp = np.array([-axis[1], axis[0]])
        worst = 1.0
        for pts in obstacles:
            top = pts[:, 2].max()
            rel = pts[:, :2] - grasp[None, :2]
            u, v = rel @ axis, rel @ perp
            for half_u, half_v, bottom in ((HAND_HALF[0], HAND_HALF[1], HAND_BOTTOM), (0.05, 0.011, -0.012)):
                if top <= grasp[2] + bottom:
                    continue
                gap_u = max(u.min() - half_u, -half_u - u.max())
                gap_v = max(v.min() - half_v, -half_v - v.max())
                worst = min(worst, max(gap_u, gap_v))
        return worst

    def _plan_grasp(self) -> None:
        """Choose grasp point, height and yaw for the current goal's object from its current extent, preferring
        candidates whose hand footprint keeps clear of neighbouring objects."""
        _pred, obj, target = self.goals[self.goal_index]
        ext = object_extent(self.env, obj)
        pos, rot = self._eef()
        if self._r_start is None:
            self._r_start = rot
        height = ext.hi[2] - ext.lo[2]
        candidates: list[tuple[float, np.ndarray, np.ndarray]] = []  # (penalty, grasp xyz, finger axis)
        tilted = object_tilt(self.env, obj) > TILT_LIMIT
        if 2 * ext.short_half > GRIPPER_MAX_WIDTH and tilted:  # a leaning bowl: grasp the raised rim
            pts = _collision_corners(self.env, obj)
            high = pts[pts[:, 2] > ext.hi[2] - 0.01, :2].mean(0)
            u = high - ext.centre_xy
            u /= max(float(np.linalg.norm(u)), 1e-9)
            xy = high - u * 0.015
            candidates.append((0.0, np.array([xy[0], xy[1], ext.hi[2] - 0.02]), u))
        elif 2 * ext.short_half > GRIPPER_MAX_WIDTH:  # wide object (bowl, plate): grasp its rim
            u0 = pos[:2] - ext.centre_xy
            base = float(np.arctan2(u0[1], u0[0]))
            radius = min(ext.short_half, ext.long_half)
            grasp_z = max(ext.hi[2] - min(0.025, 0.5 * height), ext.lo[2] + 0.008)
            for k, da in enumerate(np.deg2rad([0, 30, -30, 60, -60, 90, -90, 180])):
                u = np.array([np.cos(base + da), np.sin(base + da)])
                xy = ext.centre_xy + u * max(radius - 0.02, 0.0)
                candidates.append((0.001 * k, np.array([xy[0], xy[1], grasp_z]), u))
        else:
            grasp_z = max(ext.hi[2] - 0.035, ext.lo[2] + 0.45 * height, ext.lo[2] + 0.008)
            long_axis = np.array([-ext.short_axis[1], ext.short_axis[0]])
            reach = max(ext.long_half - 0.015, 0.0)
            for frac in (0.0, 0.5, -0.5, 0.9, -0.9):
                xy = ext.centre_xy + long_axis * reach * frac
                candidates.append((0.002 * abs(frac), np.array([xy[0], xy[1], grasp_z]), ext.short_axis))
        obstacles = self._obstacles(obj, target)
        best = max(candidates, key=lambda c: min(self._clearance(c[1], c[2], obstacles), 0.02) - c[0])
        _pen, grasp, axis = best
        dyaw = _wrap_half_pi(float(np.arctan2(axis[1], axis[0])) - self._finger_yaw())
        _txy, ttop = target_point(self.env, target)
        self._plan = {
            "obj": obj,
            "target": target,
            "grasp": grasp,
            "hover_z": max(ext.hi[2], grasp[2]) + 0.08,
            "rot": _rot_z(dyaw) @ rot,
            "lift_bottom": max(ttop, ext.lo[2]) + 0.05,
            "obj_ref": np.concatenate([ext.centre_xy, ext.hi[2:]]),
            "tilted": tilted,
        }

    def _object_moved(self) -> bool:
        """True when the object has shifted > 1 cm since the grasp was planned (it slid or was bumped)."""
        ext = object_extent(self.env, self._plan["obj"])
        now = np.concatenate([ext.centre_xy, ext.hi[2:]])
        return bool(np.linalg.norm(now - self._plan["obj_ref"]) > 0.01)

    def act(self) -> np.ndarray:
        """Next 7-D action; sets ``finished`` once every goal has been attempted."""
        self.phase_steps += 1
        p = self._plan
        pos, _rot = self._eef()
        if self.phase == "settle":
            if self.phase_steps >= 10:
                self._plan_grasp()
                self._set_phase("hover")
            return np.array([0, 0, 0, 0, 0, 0, -1.0])
        if self.phase in ("hover", "descend") and self.phase_steps % 5 == 0 and self._object_moved():
            self._plan_grasp()
            self._set_phase("hover")
            p = self._plan
        if self.phase == "hover":
            tgt = np.array([p["grasp"][0], p["grasp"][1], p["hover_z"]])
            a = self._action(tgt, -1.0, p["rot"])
            if (np.linalg.norm(tgt - pos) < 0.01 and np.abs(a[3:6]).max() < 0.05) or self.phase_steps > 60:
                self._set_phase("descend")
            return a
        if self.phase == "descend":
            a = self._action(p["grasp"], -1.0, p["rot"])
            if np.linalg.norm(p["grasp"] - pos) < 0.008 or self.phase_steps > 50:
                self._set_phase("close")
            return a
        if self.phase == "close":
            a = self._action(p["grasp"], 1.0, p["rot"])
            if self.phase_steps >= 12:
                self._set_phase("lift")
            return a
        obj_ext = object_extent(self.env, p["obj"])
        if self.phase == "lift":
            tgt = np.array([pos[0], pos[1], pos[2] + max(p["lift_bottom"] - obj_ext.lo[2], 0.0)])
            tgt[:2] = p["grasp"][:2]
            a = self._action(tgt, 1.0, p["rot"])
            if obj_ext.lo[2] >= p["lift_bottom"] - 0.005 or self.phase_steps > 50:
                self._set_phase("carry")
            return a
        txy, ttop = target_point(self.env, p["target"])
        # keep the object's centre, not the hand, over the target; for a leaning object, its body origin (what
        # LIBERO's On predicate measures), since the box centre of a tilted object is off its footprint's centre
        body_xy = self.env.sim.data.body_xpos[self.env.env.obj_body_id[p["obj"]]][:2]
        ref_xy = body_xy if p["tilted"] else obj_ext.centre_xy
        offset = pos[:2] - ref_xy
        if self.phase == "carry":
            z = pos[2] + max(p["lift_bottom"] - obj_ext.lo[2], 0.0)
            tgt = np.array([txy[0] + offset[0], txy[1] + offset[1], z])
            a = self._action(tgt, 1.0, p["rot"])
            if np.linalg.norm(ref_xy - txy) < 0.01 or self.phase_steps > 80:
                self._set_phase("lower")
            return a
        if self.phase == "lower":
            z = pos[2] - (obj_ext.lo[2] - (ttop + 0.015))
            tgt = np.array([txy[0] + offset[0], txy[1] + offset[1], z])
            a = self._action(tgt, 1.0, p["rot"])
            if obj_ext.lo[2] <= ttop + 0.02 or self.phase_steps > 50:
                self._set_phase("release")
                p["release_pos"] = pos.copy()
            return a
        if self.phase == "release":
            a = self._action(p["release_pos"], -1.0, p["rot"])
            if self.phase_steps >= 10:
                self._set_phase("retreat")
            return a
        if self.phase == "retreat":
            tgt = p["release_pos"] + np.array([0.0, 0.0, 0.10])
            a = self._action(tgt, -1.0, p["rot"])
            if np.linalg.norm(tgt - pos) < 0.015 or self.phase_steps > 30:
                self.goal_index += 1
                if self.goal_index >= len(self.goals):
                    self.finished = True
                    self._set_phase("done")
                else:
                    self._plan_grasp()
                    self._set_phase("hover")
            return a
        return np.array([0, 0, 0, 0, 0, 0, -1.0])


@dataclass
class Rollout:
    """One expert episode: states before each action, the actions, proprio, and the outcome."""

    states: np.ndarray  # (T, S) flat MuJoCo states, states[t] is seen before actions[t]
    actions: np.ndarray  # (T, 7)
    ee_pos: np.ndarray  # (T, 3)
    gripper_states: np.ndarray  # (T, 2)
    joint_states: np.ndarray  # (T, 7)
    success: bool
    steps: int


def rollout(env: Any, max_steps: int, settle_after: int = 10) -> Rollout:
    """Run the expert from the env's current state until success (+ a few settle steps) or ``max_steps``."""
    expert = ScriptedExpert(env)
    states, actions, ee, grip, joints = [], [], [], [], []
    obs = env.observe()
    success_at: int | None = None
    for t in range(max_steps):
        a = expert.act() if not expert.finished else np.array([0, 0, 0, 0, 0, 0, -1.0])
        states.append(env.get_state())
        actions.append(a)
        ee.append(obs["ee_pos"])
        grip.append(obs["gripper_states"])
        joints.append(obs["joint_states"])
        obs, _r, ok, _info = env.step(a)
        if ok and success_at is None:
            success_at = t
        if success_at is not None and t - success_at >= settle_after:
            break
        if expert.finished and success_at is None and expert.phase_steps > 30:
            break
        if expert.finished:
            expert.phase_steps += 1
    return Rollout(
        states=np.asarray(states),
        actions=np.asarray(actions, dtype=np.float64),
        ee_pos=np.asarray(ee),
        gripper_states=np.asarray(grip),
        joint_states=np.asarray(joints),
        success=success_at is not None and env.success(),
        steps=len(actions),
    )
