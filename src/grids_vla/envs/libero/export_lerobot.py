"""Export generated LIBERO HDF5 demos to a local LeRobotDataset (images, no hub).

The layout follows LeRobot's own LIBERO datasets, so LeRobot policies and processors read it unchanged:
``observation.images.image`` (agentview) and ``observation.images.wrist_image`` (eye in hand), upright
(rotated 180 degrees from the rendered frames, like :func:`~grids_vla.envs.libero.data.read_demo`),
``observation.state`` (8: ee_pos 3, ee axis-angle 3, gripper 2), ``action`` (7) and the language instruction
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
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["export_lerobot", "find_demo_files", "LEROBOT_CAMERAS"]

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


def find_demo_files(src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Finished ``*_demo.hdf5`` task files: a file, a folder of them (sorted), or a list of either.

    Only the assembled task files are read; the ``.shards`` work folder of a running generation is ignored.
    """
    items = [src] if isinstance(src, str | os.PathLike) else list(src)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(p.glob("*_demo.hdf5")))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such demo file or folder: {p}")
    if not files:
        raise FileNotFoundError(f"no *_demo.hdf5 files in {items}")
    return files


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
    missing = [k for k in (*LEROBOT_CAMERAS.values(), "ee_pos", "ee_ori", "gripper_states") if k not in demo]
    if missing:
        raise KeyError(f"{path} demo_{index} lacks obs {missing}; expected the layout of `grids-vla data libero`")
    images = {cam: np.asarray(demo[key], dtype=np.uint8) for cam, key in LEROBOT_CAMERAS.items()}
    state = np.concatenate([demo["ee_pos"], demo["ee_ori"], demo["gripper_states"]], axis=1).astype(np.float32)
    actions = np.asarray(demo["actions"], dtype=np.float32)
    n = len(actions)
    if state.shape != (n, len(STATE_NAMES)) or actions.shape[1] != len(ACTION_NAMES):
        raise ValueError(f"{path} demo_{index}: state {state.shape} / actions {actions.shape}, expected (T, 8), (T, 7)")
    for cam, img in images.items():
        if img.ndim != 4 or img.shape[0] != n or img.shape[-1] != 3:
            raise ValueError(f"{path} demo_{index}: camera {cam} has shape {img.shape}, expected ({n}, H, W, 3)")
    return images, state, actions


def export_lerobot(
    src_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_root: str | os.PathLike[str],
    repo_id: str = "local/libero_grids",
    fps: int = 20,
    *,
    max_tasks: int | None = None,
    max_demos_per_task: int | None = None,
    robot_type: str = "panda",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the demos of ``src_dir`` as a LeRobotDataset at ``out_root`` and return a summary.

    Args:
        src_dir: a ``*_demo.hdf5`` file, a folder of them, or a list of either.
        out_root: dataset root (created; must not exist unless ``overwrite``).
        repo_id: the dataset's id inside its metadata (nothing is uploaded).
        fps: frame rate recorded in the metadata (LIBERO runs at 20 Hz).
        max_tasks, max_demos_per_task: keep only the first tasks / demos (sorted by file name / index).
        robot_type: recorded in the metadata.
        overwrite: replace an existing ``out_root``.
    """
    from .data import read_demo

    lerobot_dataset = _import_lerobot_dataset()
    files = find_demo_files(src_dir)[:max_tasks] if max_tasks else find_demo_files(src_dir)
    out = Path(out_root)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp = tmp_parent / "dataset"
    summary: dict[str, Any] = {"root": str(out), "repo_id": repo_id, "fps": fps, "tasks": {}, "episodes": 0}
    try:
        dataset = None
        for path in files:
            n_demos = _num_demos(path)
            if max_demos_per_task is not None:
                n_demos = min(n_demos, max_demos_per_task)
            frames_written = 0
            instruction = ""
            for i in range(n_demos):
                demo = read_demo(path, i, upright=True)
                instruction = str(demo["instruction"])
                images, state, actions = _demo_frames(demo, path, i)
                if dataset is None:
                    hw = images["image"].shape[1:3]
                    dataset = lerobot_dataset.create(
                        repo_id=repo_id,
                        fps=fps,
                        features=_features(hw),
                        root=tmp,
                        robot_type=robot_type,
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
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    summary["frames"] = sum(t["frames"] for t in summary["tasks"].values())
    return summary
