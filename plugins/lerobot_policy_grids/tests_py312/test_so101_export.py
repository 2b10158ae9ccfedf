"""The simulated SO-101 path a real SO-101 owner follows: scripted-expert demos (``grids-vla data so101``) written as
a LeRobotDataset with LeRobot's own API, read back frame by frame (needs grids-vla's ``so101`` extra here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_so101_demo_exports_to_a_lerobot_dataset_that_reads_back(tmp_path: Path) -> None:
    from grids_vla.envs.libero.dataset import find_demo_files, read_demo
    from grids_vla.envs.libero.suites import state_vector
    from grids_vla.envs.so101.export_lerobot import export_lerobot
    from grids_vla.envs.so101.generate import generate, instruction_file
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    made = generate("stack", 1, tmp_path / "data", image_size=32, log=None)
    assert made["new_demos"] == 1
    (source,) = find_demo_files(tmp_path / "data" / "stack")
    summary = export_lerobot(tmp_path / "data" / "stack", tmp_path / "ds")
    demo = read_demo(source, 0)
    steps = len(demo["actions"])
    assert summary["episodes"] == 1 and summary["files"][source.name]["frames"] == steps
    ds = LeRobotDataset("local/so101_grids", root=summary["root"])
    assert ds.num_episodes == 1 and len(ds) == steps and ds.fps == 10
    for t in (0, steps // 2, steps - 1):
        item = ds[t]
        for cam, key in (("front", "agentview_rgb"), ("wrist", "eye_in_hand_rgb")):
            np.testing.assert_allclose(item[f"observation.images.{cam}"].permute(1, 2, 0).numpy(),
                                       demo[key][t].astype(np.float32) / 255.0, atol=1e-6)
        np.testing.assert_allclose(item["observation.state"].numpy(), state_vector(demo)[t], rtol=1e-6)
        np.testing.assert_allclose(item["action"].numpy(), demo["actions"][t], rtol=1e-6)
        assert item["task"] == demo["instruction"] and source.name == instruction_file(demo["instruction"])
    with pytest.raises(FileExistsError):
        export_lerobot(tmp_path / "data" / "stack", tmp_path / "ds")
