"""Shared fixtures: a synthetic LIBERO HDF5 file, its LeRobotDataset export, a tiny local SmolVLM, tiny configs.

Everything is generated on the fly and offline (``HF_HUB_OFFLINE=1``); the export is made once per session and
reused by the ``lerobot-train`` tests, so the whole suite stays within a few minutes on 2 CPU cores.

The suite runs on lerobot 0.4.4 (Python 3.11, ``scripts/test_lerobot_plugin.sh``) and on lerobot 0.6.x (Python 3.12,
``scripts/test_lerobot312_plugin.sh``); a check that differs between the two says so in the test and asserts what
each version must do, so nothing is skipped by version. Under ``CI=true`` or ``GRIDS_NO_SKIP=1`` (both scripts set
the latter) a skipped test fails the run, a module skipped while being collected (``pytest.importorskip`` at import)
included, so a missing dependency can never pass CI silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MUJOCO_GL", "egl")  # LeRobot's LIBERO env renders off-screen
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

IMAGE_SIZE = 64
CAMERAS = ("observation.images.image", "observation.images.wrist_image")


def lerobot_version() -> tuple[int, int]:
    """(major, minor) of the installed lerobot: the suite runs on 0.4 (Python 3.11) and 0.6 (Python 3.12)."""
    from importlib.metadata import version

    return tuple(int(p) for p in version("lerobot").split(".")[:2])  # type: ignore[return-value]


LEROBOT = lerobot_version()
if LEROBOT not in ((0, 4), (0, 6)):  # each difference below is written for these two; a third must be looked at
    raise RuntimeError(f"the plugin tests know lerobot 0.4 and 0.6, found {'.'.join(map(str, LEROBOT))}")


_skipped: list[str] = []


def _no_skip() -> bool:
    return os.environ.get("GRIDS_NO_SKIP") == "1" or os.environ.get("CI", "").lower() in ("true", "1")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:  # a whole module skipped while it was imported
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # 5: nothing was collected, which is what a skip of every module looks like; it must not pass either
    if _no_skip() and _skipped and exitstatus in (0, 5):
        print(f"\nCI / GRIDS_NO_SKIP=1 but {len(_skipped)} tests were skipped, e.g. {_skipped[:3]}")
        session.exitstatus = 1


def write_synthetic_libero(path: Path, n_demos: int = 2, steps: int = 12, size: int = IMAGE_SIZE) -> Path:
    """A file in the layout of ``grids-vla data libero`` (only the keys the export reads), with random content."""
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        instruction = "pick up the red cube and place it in the bowl"
        data.attrs["problem_info"] = json.dumps({"language_instruction": instruction})
        for i in range(n_demos):
            d = data.create_group(f"demo_{i}")
            d.create_dataset("actions", data=rng.uniform(-1, 1, (steps, 7)).astype(np.float32))
            d.create_dataset("states", data=rng.normal(size=(steps, 10)))
            obs = d.create_group("obs")
            for key in ("agentview_rgb", "eye_in_hand_rgb"):
                obs.create_dataset(key, data=rng.integers(0, 256, (steps, size, size, 3), dtype=np.uint8))
            obs.create_dataset("ee_pos", data=rng.normal(size=(steps, 3)))
            obs.create_dataset("ee_ori", data=rng.normal(size=(steps, 3)))
            obs.create_dataset("gripper_states", data=rng.normal(size=(steps, 2)))
            obs.create_dataset("joint_states", data=rng.normal(size=(steps, 7)))
    return path


@pytest.fixture(scope="session")
def libero_hdf5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("libero")
    return write_synthetic_libero(folder / "pick_up_the_red_cube_demo.hdf5")


@pytest.fixture(scope="session")
def lerobot_dataset(libero_hdf5: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from grids_vla.envs.libero.export_lerobot import export_lerobot

    root = tmp_path_factory.mktemp("datasets") / "libero_synth"
    summary = export_lerobot(libero_hdf5.parent, root, repo_id="local/libero_synth", fps=20)
    return summary


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lerobot_policy_grids.offline import write_local_smolvlm

    return write_local_smolvlm(tmp_path_factory.mktemp("vlm") / "tiny_smolvlm", "tiny")


def features(size: int = IMAGE_SIZE) -> tuple[dict[str, Any], dict[str, Any]]:
    """Input / output features of the exported dataset, as LeRobot PolicyFeatures."""
    from lerobot.configs.types import FeatureType, PolicyFeature

    inputs = {cam: PolicyFeature(FeatureType.VISUAL, (3, size, size)) for cam in CAMERAS}
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (8,))
    return inputs, {"action": PolicyFeature(FeatureType.ACTION, (7,))}


TINY_ACT = {
    "dim_model": 32,
    "n_heads": 2,
    "dim_feedforward": 64,
    "n_encoder_layers": 1,
    "n_decoder_layers": 1,
    "n_vae_encoder_layers": 1,
    "latent_dim": 8,
    "chunk_size": 5,
    "n_action_steps": 5,
    "pretrained_backbone_weights": None,
    "device": "cpu",
}
TINY_SMOLVLA = {"chunk_size": 5, "n_action_steps": 5, "device": "cpu"}


def make_batch(batch_size: int = 2, chunk: int = 5, size: int = IMAGE_SIZE, language: bool = False) -> dict[str, Any]:
    """A random training batch as the policy sees it after LeRobot's pre-processor."""
    import torch

    g = torch.Generator().manual_seed(0)
    batch: dict[str, Any] = {cam: torch.rand(batch_size, 3, size, size, generator=g) for cam in CAMERAS}
    batch["observation.state"] = torch.randn(batch_size, 8, generator=g)
    batch["action"] = torch.randn(batch_size, chunk, 7, generator=g)
    batch["action_is_pad"] = torch.zeros(batch_size, chunk, dtype=torch.bool)
    if language:
        batch["observation.language.tokens"] = torch.randint(10, 400, (batch_size, 8), generator=g)
        batch["observation.language.attention_mask"] = torch.ones(batch_size, 8, dtype=torch.bool)
    return batch
