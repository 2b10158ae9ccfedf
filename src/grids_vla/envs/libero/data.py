"""Moved: demo generation to ``grids_vla.envs.libero.generate``, the reader to ``.dataset`` and the layout facts
(``CAMERA_KEYS``, ``quat_to_axis_angle``) to ``.suites``; this module re-exports them for old imports."""

from .dataset import LiberoDemoDataset, read_demo
from .generate import (
    Episode,
    GenerateConfig,
    _generate_one_task,
    attempt_seed,
    generate,
    physics_env,
    render_states,
    write_summary,
)
from .suites import CAMERA_KEYS, quat_to_axis_angle

__all__ = ["CAMERA_KEYS", "Episode", "GenerateConfig", "LiberoDemoDataset", "_generate_one_task", "attempt_seed",
           "generate", "physics_env", "quat_to_axis_angle", "read_demo", "render_states", "write_summary"]
