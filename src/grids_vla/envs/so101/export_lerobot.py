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
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import replace_dir
from ..libero.dataset import find_demo_files, read_demo
from ..libero.suites import CAMERA_KEYS, STATE_DIM, state_vector

__all__ = ["ACTION_NAMES", "LEROBOT_CAMERAS", "STATE_NAMES", "SO101ExportConfig", "export_lerobot"]

#: LeRobot camera name -> key under data/demo_i/obs in the demo files.
LEROBOT_CAMERAS = {"front": CAMERA_KEYS["agentview"], "wrist": CAMERA_KEYS["eye_in_hand"]}
STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "jaw_angle", "jaw_velocity"]
ACTION_NAMES = ["dx", "dy", "dz", "grasp"]


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


def _import_lerobot_dataset() -> Any:
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError as exc:  # depends on the environment
        raise ImportError(
            "the LeRobotDataset export needs lerobot (0.4.4 on Python 3.11), which pins its own torch: run it in the "
            "separate environment made by `bash scripts/setup_lerobot_env.sh`"
        ) from exc
    return LeRobotDataset


def _features(image_hw: tuple[int, int]) -> dict[str, dict[str, Any]]:
    h, w = image_hw
    feats: dict[str, dict[str, Any]] = {
        f"observation.images.{cam}": {"dtype": "image", "shape": (h, w, 3), "names": ["height", "width", "channel"]}
        for cam in LEROBOT_CAMERAS
    }
    feats["observation.state"] = {"dtype": "float32", "shape": (len(STATE_NAMES),), "names": STATE_NAMES}
    feats["action"] = {"dtype": "float32", "shape": (len(ACTION_NAMES),), "names": ACTION_NAMES}
    return feats


def demo_frames(demo: dict[str, Any], where: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Images (upright), states (T, 8) and actions (T, 4) of one :func:`read_demo` dict, checked."""
    missing = [k for k in (*LEROBOT_CAMERAS.values(), "ee_pos", "ee_ori", "gripper_states") if k not in demo]
    if missing:
        raise KeyError(f"{where} lacks obs {missing}; expected the layout of `grids-vla data so101`")
    images = {cam: np.asarray(demo[key], dtype=np.uint8) for cam, key in LEROBOT_CAMERAS.items()}
    state = state_vector(demo).astype(np.float32)
    actions = np.asarray(demo["actions"], dtype=np.float32)
    n = len(actions)
    if state.shape != (n, STATE_DIM) or actions.shape != (n, len(ACTION_NAMES)):
        raise ValueError(f"{where}: state {state.shape} / actions {actions.shape}, expected ({n}, 8), ({n}, 4)")
    for cam, img in images.items():
        if img.ndim != 4 or img.shape[0] != n or img.shape[-1] != 3:
            raise ValueError(f"{where}: camera {cam} has shape {img.shape}, expected ({n}, H, W, 3)")
    return images, state, actions


def export_lerobot(data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                   **options: Any) -> dict[str, Any]:
    """Write the demos under ``data`` as a LeRobotDataset at ``out``; returns a summary. ``options`` are the other
    :class:`SO101ExportConfig` fields."""
    import h5py

    cfg = SO101ExportConfig(data, os.fspath(out), **options)
    lerobot_dataset = _import_lerobot_dataset()
    files = find_demo_files(cfg.data)
    root = Path(cfg.out)
    if root.exists() and not cfg.overwrite:
        raise FileExistsError(f"{root} exists; pass overwrite=True to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    tmp = tmp_parent / "dataset"
    summary: dict[str, Any] = {"root": str(root), "repo_id": cfg.repo_id, "fps": cfg.fps, "files": {}, "episodes": 0}
    try:
        dataset = None
        for path in files:
            with h5py.File(path, "r") as f:
                n_demos = sum(1 for k in f["data"] if k.startswith("demo_"))
            if cfg.max_demos_per_file is not None:
                n_demos = min(n_demos, cfg.max_demos_per_file)
            frames = 0
            for i in range(n_demos):
                demo = read_demo(path, i, upright=True)
                images, state, actions = demo_frames(demo, f"{path} demo_{i}")
                if dataset is None:
                    dataset = lerobot_dataset.create(repo_id=cfg.repo_id, fps=cfg.fps,
                                                     features=_features(images["front"].shape[1:3]), root=tmp,
                                                     robot_type=cfg.robot_type, use_videos=False,
                                                     image_writer_threads=0)
                for t in range(len(actions)):
                    frame = {f"observation.images.{cam}": img[t] for cam, img in images.items()}
                    frame["observation.state"] = state[t]
                    frame["action"] = actions[t]
                    frame["task"] = str(demo["instruction"])
                    dataset.add_frame(frame)
                dataset.save_episode()
                frames += len(actions)
                summary["episodes"] += 1
            summary["files"][path.name] = {"demos": n_demos, "frames": frames}
        if dataset is None:
            raise ValueError(f"no demos found in {[str(f) for f in files]}")
        dataset.finalize()
        staging = tmp / "images"  # LeRobot's PNG staging folder: empty once the frames are in the parquet files
        if staging.is_dir() and not any(p.is_file() for p in staging.rglob("*")):
            shutil.rmtree(staging)
        replace_dir(tmp, root)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    summary["frames"] = sum(v["frames"] for v in summary["files"].values())
    return summary
