"""Export SO-101 demos (``grids-vla data so101``) to a local LeRobotDataset (images, no hub).

Features: ``observation.images.front`` and ``observation.images.wrist`` (upright, as
:func:`~grids_vla.envs.libero.dataset.read_demo` returns them), ``observation.state`` (8: ee_pos 3, ee axis-angle 3,
jaw angle and velocity; :func:`~grids_vla.envs.libero.suites.state_vector`), ``action`` (4: ``[dx, dy, dz, grasp]``,
the env's native action) and the instruction as the frame's task; 10 fps (the env's control rate), robot type
``so101``. Frames are stored as PNG images (``use_videos=False``): no video encoder is needed.

lerobot is imported lazily; it pins an older torch than this package, so the export runs in the separate
``.venv-lerobot`` (``scripts/setup_lerobot_env.sh``). The dataset is written into a temporary sibling folder and
renamed into place only when complete, so an interrupted export never leaves a half dataset at ``out``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..libero.dataset import find_demo_files
from ..libero.export_lerobot import LeRobotLayout, write_lerobot_dataset
from ..libero.suites import CAMERA_KEYS

__all__ = ["SO101_LAYOUT", "SO101ExportConfig", "export_lerobot"]

SO101_LAYOUT = LeRobotLayout(
    cameras={"front": CAMERA_KEYS["agentview"], "wrist": CAMERA_KEYS["eye_in_hand"]},
    state_names=("eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "jaw_angle", "jaw_velocity"),
    action_names=("dx", "dy", "dz", "grasp"),
    source="grids-vla data so101",
)


@dataclass
class SO101ExportConfig:
    """What :func:`export_lerobot` writes."""

    data: str | Sequence[str]  # a *_demo.hdf5 file, a folder of them, or a list of either
    out: str  # dataset root (created; must not exist unless overwrite)
    repo_id: str = "local/so101_grids"  # the dataset's id inside its metadata (nothing is uploaded)
    fps: int = 10  # the env's control rate
    max_demos_per_file: int | None = None  # keep only the first demos of each instruction file
    robot_type: str = "so101"
    overwrite: bool = False  # replace an existing out

    def __post_init__(self) -> None:
        if self.fps < 1:
            raise ValueError(f"--fps: found {self.fps}, expected >= 1")
        if self.max_demos_per_file is not None and self.max_demos_per_file < 1:
            raise ValueError(f"--max-demos-per-file: found {self.max_demos_per_file}, expected >= 1")


def export_lerobot(data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                   **options: Any) -> dict[str, Any]:
    """Write the demos under ``data`` as a LeRobotDataset at ``out`` (:data:`SO101_LAYOUT`); returns the summary of
    :func:`~grids_vla.envs.libero.export_lerobot.write_lerobot_dataset`. ``options`` are the other
    :class:`SO101ExportConfig` fields."""
    cfg = SO101ExportConfig(data, os.fspath(out), **options)
    return write_lerobot_dataset(SO101_LAYOUT, find_demo_files(cfg.data), cfg.out, repo_id=cfg.repo_id, fps=cfg.fps,
                                 robot_type=cfg.robot_type, max_demos_per_file=cfg.max_demos_per_file,
                                 overwrite=cfg.overwrite)
