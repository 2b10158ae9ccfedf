"""Export generated LIBERO HDF5 demos to a local LeRobotDataset (images, no hub).

The layout follows LeRobot's own LIBERO datasets, so LeRobot policies and processors read it unchanged:
``observation.images.image`` (agentview) and ``observation.images.wrist_image`` (eye in hand), upright
(rotated 180 degrees from the rendered frames, like :func:`~grids_vla.envs.libero.dataset.read_demo`),
``observation.state`` (8: ee_pos 3, ee axis-angle 3, gripper 2; :func:`~grids_vla.envs.libero.suites.state_vector`),
``action`` (7) and the language instruction
as the frame's task. Frames are stored as PNG images (``use_videos=False``): no video encoder is needed.

lerobot is imported lazily; it pins an older torch than this package, so the export runs in the separate
``.venv-lerobot`` made by ``scripts/setup_lerobot_env.sh``. The dataset is written into a temporary sibling
folder and renamed into place only when complete, so an interrupted export never leaves a half dataset at
``out_root``.
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
from .dataset import find_demo_files, read_demo
from .suites import STATE_DIM, STATE_KEYS, state_vector

__all__ = ["ExportConfig", "export_lerobot", "find_demo_files", "LEROBOT_CAMERAS"]

# LeRobot camera name -> key under data/demo_i/obs in our HDF5 files.
LEROBOT_CAMERAS = {"image": "agentview_rgb", "wrist_image": "eye_in_hand_rgb"}
STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "gripper_left", "gripper_right"]
ACTION_NAMES = ["dx", "dy", "dz", "drx", "dry", "drz", "gripper"]


def _import_lerobot_dataset() -> Any:
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "export-lerobot needs lerobot (0.4.4 on Python 3.11), which pins its own torch: run it in the "
            "separate environment made by `bash scripts/setup_lerobot_env.sh` (.venv-lerobot/bin/grids-vla ...)"
        ) from exc
    return LeRobotDataset


def _num_demos(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return sum(1 for k in f["data"] if k.startswith("demo_"))


def _features(image_hw: tuple[int, int]) -> dict[str, dict[str, Any]]:
    h, w = image_hw
    feats: dict[str, dict[str, Any]] = {
        f"observation.images.{cam}": {"dtype": "image", "shape": (h, w, 3), "names": ["height", "width", "channel"]}
        for cam in LEROBOT_CAMERAS
    }
    feats["observation.state"] = {"dtype": "float32", "shape": (len(STATE_NAMES),), "names": STATE_NAMES}
    feats["action"] = {"dtype": "float32", "shape": (len(ACTION_NAMES),), "names": ACTION_NAMES}
    return feats


def _demo_frames(demo: dict[str, Any], path: Path, index: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    missing = [k for k in (*LEROBOT_CAMERAS.values(), *STATE_KEYS) if k not in demo]
    if missing:
        raise KeyError(f"{path} demo_{index} lacks obs {missing}; expected the layout of `grids-vla data libero`")
    images = {cam: np.asarray(demo[key], dtype=np.uint8) for cam, key in LEROBOT_CAMERAS.items()}
    state = state_vector(demo).astype(np.float32)
    actions = np.asarray(demo["actions"], dtype=np.float32)
    n = len(actions)
    if state.shape != (n, STATE_DIM) or actions.shape[1] != len(ACTION_NAMES):
        raise ValueError(f"{path} demo_{index}: state {state.shape} / actions {actions.shape}, expected (T, 8), (T, 7)")
    for cam, img in images.items():
        if img.ndim != 4 or img.shape[0] != n or img.shape[-1] != 3:
            raise ValueError(f"{path} demo_{index}: camera {cam} has shape {img.shape}, expected ({n}, H, W, 3)")
    return images, state, actions


@dataclass
class ExportConfig:
    """What :func:`export_lerobot` writes (the fields of ``grids-vla data export-lerobot``)."""

    data: str | Sequence[str]  # a *_demo.hdf5 file, a folder of them, or a list of either
    out: str  # dataset root (created; must not exist unless overwrite)
    repo_id: str = "local/libero_grids"  # the dataset's id inside its metadata (nothing is uploaded)
    fps: int = 20  # frame rate recorded in the metadata (LIBERO runs at 20 Hz)
    max_tasks: int | None = None  # keep only the first task files (sorted by name)
    max_demos_per_task: int | None = None  # and the first demos of each
    robot_type: str = "panda"  # recorded in the metadata
    overwrite: bool = False  # replace an existing out


def export_lerobot(src_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                   out_root: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
    """Write the demos of ``src_dir`` (a ``*_demo.hdf5`` file, a folder of them, or a list of either) as a
    LeRobotDataset at ``out_root`` and return a summary; ``options`` are the other :class:`ExportConfig` fields."""
    cfg = ExportConfig(src_dir, out_root, **options)
    lerobot_dataset = _import_lerobot_dataset()
    files = find_demo_files(cfg.data)[:cfg.max_tasks] if cfg.max_tasks else find_demo_files(cfg.data)
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp = tmp_parent / "dataset"
    summary: dict[str, Any] = {"root": str(out), "repo_id": cfg.repo_id, "fps": cfg.fps, "tasks": {}, "episodes": 0}
    try:
        dataset = None
        for path in files:
            n_demos = _num_demos(path)
            if cfg.max_demos_per_task is not None:
                n_demos = min(n_demos, cfg.max_demos_per_task)
            frames_written = 0
            instruction = ""
            for i in range(n_demos):
                demo = read_demo(path, i, upright=True)
                instruction = str(demo["instruction"])
                images, state, actions = _demo_frames(demo, path, i)
                if dataset is None:
                    hw = images["image"].shape[1:3]
                    dataset = lerobot_dataset.create(
                        repo_id=cfg.repo_id,
                        fps=cfg.fps,
                        features=_features(hw),
                        root=tmp,
                        robot_type=cfg.robot_type,
                        use_videos=False,
                        image_writer_threads=0,
                    )
                for t in range(len(actions)):
                    frame = {f"observation.images.{cam}": img[t] for cam, img in images.items()}
                    frame["observation.state"] = state[t]
                    frame["action"] = actions[t]
                    frame["task"] = instruction
                    dataset.add_frame(frame)
                dataset.save_episode()
                frames_written += len(actions)
                summary["episodes"] += 1
            summary["tasks"][instruction or path.stem] = {"file": path.name, "demos": n_demos, "frames": frames_written}
        if dataset is None:
            raise ValueError(f"no demos found in {[str(f) for f in files]}")
        dataset.finalize()
        staging = tmp / "images"  # LeRobot's PNG staging folder: emptied once frames are embedded in the parquet
        if staging.is_dir() and not any(p.is_file() for p in staging.rglob("*")):
            shutil.rmtree(staging)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    summary["frames"] = sum(t["frames"] for t in summary["tasks"].values())
    return summary
