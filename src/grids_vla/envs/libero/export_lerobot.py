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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import replace_dir
from .dataset import find_demo_files, read_demo
from .suites import CAMERA_KEYS, STATE_DIM, STATE_KEYS, state_vector

__all__ = ["ExportConfig", "LIBERO_LAYOUT", "LeRobotLayout", "export_lerobot", "find_demo_files",
           "write_lerobot_dataset"]


@dataclass(frozen=True)
class LeRobotLayout:
    """How the demos of a LIBERO-layout HDF5 file become LeRobotDataset features: ``observation.images.<camera>``
    from the obs key ``cameras`` maps it to (upright), ``observation.state`` (:func:`~.suites.state_vector`, named
    ``state_names``) and ``action`` (named ``action_names``). ``source`` is the command that writes such files (for
    error messages)."""

    cameras: Mapping[str, str]
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    source: str

    def features(self, image_hw: tuple[int, int]) -> dict[str, dict[str, Any]]:
        h, w = image_hw
        feats: dict[str, dict[str, Any]] = {
            f"observation.images.{cam}": {"dtype": "image", "shape": (h, w, 3), "names": ["height", "width", "channel"]}
            for cam in self.cameras
        }
        feats["observation.state"] = {"dtype": "float32", "shape": (len(self.state_names),),
                                      "names": list(self.state_names)}
        feats["action"] = {"dtype": "float32", "shape": (len(self.action_names),), "names": list(self.action_names)}
        return feats

    def frames(self, demo: Mapping[str, Any], where: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Images (upright), states (T, 8) and actions (T, A) of one :func:`read_demo` dict, checked."""
        missing = [k for k in (*self.cameras.values(), *STATE_KEYS) if k not in demo]
        if missing:
            raise KeyError(f"{where} lacks obs {missing}; expected the layout of `{self.source}`")
        images = {cam: np.asarray(demo[key], dtype=np.uint8) for cam, key in self.cameras.items()}
        state = state_vector(demo).astype(np.float32)
        actions = np.asarray(demo["actions"], dtype=np.float32)
        n, a = len(actions), len(self.action_names)
        if state.shape != (n, STATE_DIM) or actions.shape != (n, a):
            raise ValueError(f"{where}: state {state.shape} / actions {actions.shape}, expected ({n}, {STATE_DIM}), "
                             f"({n}, {a})")
        for cam, img in images.items():
            if img.ndim != 4 or img.shape[0] != n or img.shape[-1] != 3:
                raise ValueError(f"{where}: camera {cam} has shape {img.shape}, expected ({n}, H, W, 3)")
        return images, state, actions


#: LeRobot's own LIBERO datasets: ``image`` (agentview) and ``wrist_image`` (eye in hand), 7-D actions.
LIBERO_LAYOUT = LeRobotLayout(
    cameras={"image": CAMERA_KEYS["agentview"], "wrist_image": CAMERA_KEYS["eye_in_hand"]},
    state_names=("eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "gripper_left", "gripper_right"),
    action_names=("dx", "dy", "dz", "drx", "dry", "drz", "gripper"),
    source="grids-vla data libero",
)


def _import_lerobot_dataset() -> Any:
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the LeRobotDataset export needs lerobot (0.4.4 on Python 3.11), which pins its own torch: run it in the "
            "separate environment made by `bash scripts/setup_lerobot_env.sh` (.venv-lerobot/bin/grids-vla ...)"
        ) from exc
    return LeRobotDataset


def _num_demos(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return sum(1 for k in f["data"] if k.startswith("demo_"))


def write_lerobot_dataset(layout: LeRobotLayout, files: Sequence[Path], out: str | os.PathLike[str], *,
                          repo_id: str, fps: int, robot_type: str, max_demos_per_file: int | None = None,
                          overwrite: bool = False) -> dict[str, Any]:
    """Write the demos of ``files`` (the first ``max_demos_per_file`` of each) as a LeRobotDataset at ``out``, the
    instruction as each frame's task; returns a summary (``root``, ``repo_id``, ``fps``, ``episodes``, ``frames``
    and per file name its ``instruction``, ``demos``, ``frames``). Written into a temporary sibling folder and renamed
    into place when complete."""
    lerobot_dataset = _import_lerobot_dataset()
    root = Path(out)
    if root.exists() and not overwrite:
        raise FileExistsError(f"{root} exists; pass overwrite=True (--overwrite) to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp_parent = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    tmp = tmp_parent / "dataset"
    summary: dict[str, Any] = {"root": str(root), "repo_id": repo_id, "fps": fps, "files": {}, "episodes": 0}
    try:
        dataset = None
        for path in files:
            n_demos = _num_demos(path)
            if max_demos_per_file is not None:
                n_demos = min(n_demos, max_demos_per_file)
            frames, instruction = 0, ""
            for i in range(n_demos):
                demo = read_demo(path, i, upright=True)
                instruction = str(demo["instruction"])
                images, state, actions = layout.frames(demo, f"{path} demo_{i}")
                if dataset is None:
                    dataset = lerobot_dataset.create(repo_id=repo_id, fps=fps,
                                                     features=layout.features(next(iter(images.values())).shape[1:3]),
                                                     root=tmp, robot_type=robot_type, use_videos=False,
                                                     image_writer_threads=0)
                for t in range(len(actions)):
                    frame = {f"observation.images.{cam}": img[t] for cam, img in images.items()}
                    frame["observation.state"] = state[t]
                    frame["action"] = actions[t]
                    frame["task"] = instruction
                    dataset.add_frame(frame)
                dataset.save_episode()
                frames += len(actions)
                summary["episodes"] += 1
            summary["files"][path.name] = {"instruction": instruction, "demos": n_demos, "frames": frames}
        if dataset is None:
            raise ValueError(f"no demos found in {[str(f) for f in files]}")
        dataset.finalize()
        staging = tmp / "images"  # LeRobot's PNG staging folder: emptied once frames are embedded in the parquet
        if staging.is_dir() and not any(p.is_file() for p in staging.rglob("*")):
            shutil.rmtree(staging)
        replace_dir(tmp, root)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    summary["frames"] = sum(f["frames"] for f in summary["files"].values())
    return summary


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
    LeRobotDataset at ``out_root`` (:data:`LIBERO_LAYOUT`) and return the summary of :func:`write_lerobot_dataset`;
    ``options`` are the other :class:`ExportConfig` fields."""
    cfg = ExportConfig(src_dir, out_root, **options)
    files = find_demo_files(cfg.data)
    return write_lerobot_dataset(LIBERO_LAYOUT, files[:cfg.max_tasks] if cfg.max_tasks else files, cfg.out,
                                 repo_id=cfg.repo_id, fps=cfg.fps, robot_type=cfg.robot_type,
                                 max_demos_per_file=cfg.max_demos_per_task, overwrite=cfg.overwrite)
