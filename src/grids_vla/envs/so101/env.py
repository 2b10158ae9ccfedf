"""The simulated SO-101 task environment: one :class:`~.scene.Scene` at a time, two cameras, 4-D actions.

Actions are the ``lerobot-env-so101`` package's native ``[dx, dy, dz, grasp]`` at 10 Hz: a position step of the grasp
point between the jaws (``ACTION_SCALE`` metres per unit, clipped to [-1, 1]) solved by the package's
Levenberg-Marquardt IK with the gripper held pointing down and the jaws closing along the world y axis, and an
absolute jaw command (0 closed, 1 open). Its jaw pads collide, as in the package's pick-and-place task.

Observations: ``front`` and ``wrist`` RGB images (uint8, H x W x 3, upright), ``ee_pos`` and ``ee_quat`` (xyzw) of
the ``gripperframe`` site, ``gripper_states`` (jaw angle, jaw angular velocity), ``joint_states`` (the six joint
angles).

Success is read from the simulator state (:func:`in_bowl`, :func:`stacked`): the cube rests, released, inside the
bowl's footprint and below its rim; or on top of the other cube.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is first imported
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from .scene import BOWL_INNER_RADIUS, BOWL_RIM_HEIGHT, CUBE_HALF, TASKS, Scene, build_model, sample_scene  # noqa: E402

__all__ = ["ACTION_SCALE", "CAMERAS", "MAX_STEPS", "SO101Env", "in_bowl", "stacked"]

CAMERAS: tuple[str, ...] = ("front", "wrist")
ACTION_SCALE = 0.025  # metres per unit of position action (the package's default)
CONTROL_DT = 0.1
PHYSICS_DT = 0.002
MAX_STEPS: dict[str, int] = {"pick_place_bowl": 160, "stack": 160}
ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
JAW_PADS = ("fixed_jaw_pad", "moving_jaw_pad")
CARTESIAN_BOUNDS = np.asarray([[0.1, -0.3, 0.0], [0.5, 0.3, 0.4]])
REST_SPEED = 0.05  # m/s: a cube slower than this rests
DOWN = np.asarray([0.0, 0.0, -1.0])
JAW_DIRECTION = np.asarray([0.0, 1.0, 0.0])
#: A position step whose norm is below this holds the arm where it is (the IK target is reset to the grasp point)
#: instead of moving the target by it.
HOLD_BELOW = 1e-6


def in_bowl(cube_pos: np.ndarray, bowl_xy: np.ndarray, speed: float = 0.0, held: bool = False) -> bool:
    """The cube's centre is inside the bowl's inner footprint and below its rim, and the cube rests, released."""
    inside = np.linalg.norm(np.asarray(cube_pos[:2]) - np.asarray(bowl_xy[:2])) < BOWL_INNER_RADIUS
    return bool(inside and cube_pos[2] < BOWL_RIM_HEIGHT and speed < REST_SPEED and not held)


def stacked(top_pos: np.ndarray, base_pos: np.ndarray, speed: float = 0.0, held: bool = False) -> bool:
    """The top cube's centre is over the base cube's top face, one cube height (+-5 mm) above its centre, and the top
    cube rests, released."""
    over = np.linalg.norm(np.asarray(top_pos[:2]) - np.asarray(base_pos[:2])) < CUBE_HALF
    dz = top_pos[2] - base_pos[2]
    return bool(over and abs(dz - 2 * CUBE_HALF) < 0.005 and speed < REST_SPEED and not held)


def _structure(scene: Scene) -> tuple:
    """What needs a new compiled model (positions and colours are set on the existing one)."""
    return (scene.task, tuple((o.name, o.shape, o.size) for o in scene.objects()), scene.bowl is not None,
            scene.light, scene.table)


class SO101Env:
    """One task (``pick_place_bowl`` or ``stack``). :meth:`reset` takes a seed (an in-distribution scene, see
    :func:`~.scene.sample_scene`) or a :class:`~.scene.Scene` (e.g. one of :func:`~.scene.ood_scenes`).

    ``cameras=()`` renders nothing (physics only); ``fast=False`` uses the package's render settings (8x
    multisampling, shadows, full meshes): same physics, ~600x slower images on a CPU.
    """

    def __init__(self, task: str, image_size: int = 128, cameras: tuple[str, ...] = CAMERAS, fast: bool = True):
        if task not in TASKS:
            raise ValueError(f"--task: unknown task {task!r}; expected one of {', '.join(TASKS)}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"cameras: unknown {unknown}; expected a subset of {list(CAMERAS)}")
        if image_size < 16:
            raise ValueError(f"--image-size: found {image_size}, expected >= 16")
        self.task, self.image_size, self.cameras, self.fast = task, image_size, tuple(cameras), fast
        self.model: Any = None
        self.data: Any = None
        self.scene: Scene | None = None
        self._key: tuple | None = None
        self._renderer: Any = None
        self.steps = 0

    # ------------------------------------------------------------------------------------------------ model
    def _load(self, scene: Scene) -> None:
        import mujoco
        from lerobot_env_so101.mujoco_env import grasp_point_offset

        key = _structure(scene)
        if key == self._key:
            return
        self.close()
        m = build_model(scene, self.image_size, self.fast)
        for name in JAW_PADS:  # the package's pick-and-place task lets the jaw pads collide
            m.geom_contype[m.geom(name).id] = 1
            m.geom_conaffinity[m.geom(name).id] = 1
        m.opt.timestep = PHYSICS_DT
        self.model, self.data, self._key = m, mujoco.MjData(m), key
        self._arm_q = np.asarray([m.joint(n).qposadr[0] for n in ARM_JOINTS])
        self._arm_ctrl = np.asarray([m.actuator(n).id for n in ARM_JOINTS])
        self._grip_q = m.joint("gripper").qposadr[0]
        self._grip_v = m.joint("gripper").dofadr[0]
        self._grip_ctrl = m.actuator("gripper").id
        self._site = m.site("gripperframe").id
        self._roll_joint = m.joint("wrist_roll").id
        self._offset = grasp_point_offset(m, self._site)
        self._gripper_bodies = {m.body(n).id for n in ("gripper", "moving_jaw_so101_v1")}
        self._substeps = int(round(CONTROL_DT / PHYSICS_DT))

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -------------------------------------------------------------------------------------------- episodes
    def reset(self, seed: int | None = None, scene: Scene | None = None) -> dict[str, np.ndarray]:
        """Start an episode in ``scene`` (or the in-distribution scene of ``seed``); the state after a reset depends
        only on the scene."""
        import mujoco

        if scene is None:
            scene = sample_scene(self.task, 0 if seed is None else int(seed))
        if scene.task != self.task:
            raise ValueError(f"scene is for task {scene.task!r}, this env runs {self.task!r}")
        self._load(scene)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        for o in scene.objects():
            adr = m.joint(o.name).qposadr[0]
            d.qpos[adr:adr + 7] = [o.xy[0], o.xy[1], o.half_height, np.cos(o.yaw / 2), 0, 0, np.sin(o.yaw / 2)]
            m.geom_rgba[m.geom(o.name).id] = [*o.rgb, 1.0]
        if scene.bowl is not None:
            m.body_pos[m.body("bowl").id] = [scene.bowl[0], scene.bowl[1], 0.0]
        d.qpos[self._arm_q] = 0.0
        d.ctrl[self._arm_ctrl] = 0.0
        mujoco.mj_forward(m, d)
        self._target = self.grasp_point.copy()
        self._holding = False
        self.scene, self.steps = scene, 0
        return self.observe()

    @property
    def instruction(self) -> str:
        return self.scene.instruction

    @property
    def grasp_point(self) -> np.ndarray:
        """World position of the point the action moves (between the jaw pads)."""
        return self.data.site_xpos[self._site] + self.data.site_xmat[self._site].reshape(3, 3) @ self._offset

    def object_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self.model.body(name).id].copy()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool]:
        """Apply ``[dx, dy, dz, grasp]`` for one control step; returns the observation and whether the task is done."""
        import mujoco
        from lerobot_env_so101.gripper import normalized_to_ctrl
        from lerobot_env_so101.ik_control import roll_to_align_axis, solve_ik

        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (4,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action: found shape {a.shape} (finite: {bool(np.all(np.isfinite(a)))}), expected 4 "
                             f"finite values [dx, dy, dz, grasp]")
        m, d = self.model, self.data
        delta = np.clip(a[:3], -1.0, 1.0)
        if np.linalg.norm(delta) < HOLD_BELOW:  # hold where the arm is instead of chasing an overshot target
            if not self._holding:
                self._target = self.grasp_point.copy()
            self._holding = True
        else:
            self._target = self._target + delta * ACTION_SCALE
            self._holding = False
        self._target = np.clip(self._target, CARTESIAN_BOUNDS[0], CARTESIAN_BOUNDS[1])
        d.ctrl[self._grip_ctrl] = normalized_to_ctrl(float(np.clip(a[3], 0, 1)), m.actuator("gripper").ctrlrange)
        seed = d.qpos[self._arm_q].copy()
        roll = list(ARM_JOINTS).index("wrist_roll")
        seed[roll] += roll_to_align_axis(d, self._site, self._roll_joint, 2, JAW_DIRECTION)
        seed[roll] = np.clip(seed[roll], *m.jnt_range[self._roll_joint])
        q = solve_ik(model=m, data=d, site_id=self._site, dof_ids=self._arm_q, target_pos=self._target,
                     ik_method="levenberg_marquardt", ik_damping=0.1, ik_iterations=20, seed_q=seed,
                     point_offset=self._offset, approach_axis=0, approach_dir=DOWN)
        rng = m.actuator_ctrlrange[self._arm_ctrl]
        d.ctrl[self._arm_ctrl] = np.clip(q, rng[:, 0], rng[:, 1])
        mujoco.mj_step(m, d, nstep=self._substeps)
        self.steps += 1
        return self.observe(), self.success()

    # -------------------------------------------------------------------------------------------- reading
    def held(self, name: str) -> bool:
        """Whether object ``name`` touches the gripper (either jaw)."""
        m, d = self.model, self.data
        body = m.body(name).id
        for c in d.contact[:d.ncon]:
            b1, b2 = m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]
            if (b1 == body and b2 in self._gripper_bodies) or (b2 == body and b1 in self._gripper_bodies):
                return True
        return False

    def speed(self, name: str) -> float:
        adr = self.model.joint(name).dofadr[0]
        return float(np.linalg.norm(self.data.qvel[adr:adr + 3]))

    def success(self) -> bool:
        """The task's goal holds in the current simulator state."""
        top = self.object_pos("target")
        if self.task == "pick_place_bowl":
            return in_bowl(top, np.asarray(self.scene.bowl), self.speed("target"), self.held("target"))
        return stacked(top, self.object_pos("base_cube"), self.speed("target"), self.held("target"))

    def observe(self) -> dict[str, np.ndarray]:
        import mujoco

        m, d = self.model, self.data
        obs: dict[str, np.ndarray] = {}
        if self.cameras:
            if self._renderer is None:
                self._renderer = mujoco.Renderer(m, self.image_size, self.image_size)
            for cam in self.cameras:
                self._renderer.update_scene(d, camera=cam)
                obs[cam] = self._renderer.render().copy()
        wxyz = np.empty(4)
        mujoco.mju_mat2Quat(wxyz, d.site_xmat[self._site])
        obs["ee_pos"] = d.site_xpos[self._site].copy()
        obs["ee_quat"] = np.asarray([wxyz[1], wxyz[2], wxyz[3], wxyz[0]])
        obs["gripper_states"] = np.asarray([d.qpos[self._grip_q], d.qvel[self._grip_v]])
        obs["joint_states"] = np.concatenate([d.qpos[self._arm_q], [d.qpos[self._grip_q]]])
        return obs

    def get_state(self) -> np.ndarray:
        """The full physics state (time, qpos, qvel, act, ctrl) and the IK target, flat."""
        d = self.data
        return np.concatenate([[d.time], d.qpos, d.qvel, d.act, d.ctrl, self._target, [float(self._holding)]])
