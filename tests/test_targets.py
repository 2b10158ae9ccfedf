"""Task targets projected into the policy's upright camera images agree with the renderer's segmentation (LIBERO)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("libero.libero", reason="LIBERO extra not installed: pip install 'grids-vla[libero]'")

from grids_vla.envs.libero.env import make_env  # noqa: E402
from grids_vla.envs.libero.targets import GRIPPER, target_mask, target_names, target_pixels  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = make_env("libero_object", 0, image_size=64)
    yield e
    e.close()


def test_projection_lands_on_the_segmented_object(env) -> None:
    obs = env.reset(init_state=0)
    names = target_names(env)
    assert names[-1] == GRIPPER and len(names) == 3  # libero_object: the object to move, the basket, the gripper
    for cam in ("agentview", "eye_in_hand"):
        px, mask = target_pixels(env, cam), target_mask(env, cam)
        assert px.shape == (3, 2) and mask.shape == (64, 64) and 0 < mask.mean() < 0.5
        for x, y in px[:2]:  # the two objects: each projected centre lies on (or within 1 px of) its own pixels
            if 0 <= x < 64 and 0 <= y < 64:
                i, j = int(y), int(x)
                assert mask[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].any(), (cam, x, y)
    # the mask is in the upright orientation of the observation: the object's pixels differ from the floor's
    col, row = px_obj = target_pixels(env, "agentview")[0]
    assert np.isfinite(px_obj).all()
    patch = obs["agentview"][int(row) - 1:int(row) + 2, int(col) - 1:int(col) + 2].astype(float)
    floor = obs["agentview"][60:63, 2:5].astype(float)  # bottom-left corner: floor in every libero_object layout
    assert np.abs(patch.mean((0, 1)) - floor.mean((0, 1))).max() > 10
    np.testing.assert_array_equal(env.observe()["agentview"], obs["agentview"])  # the segmentation pass left no trace


def test_unknown_camera(env) -> None:
    with pytest.raises(ValueError, match="unknown camera 'wrist'"):
        target_pixels(env, "wrist")


def test_points_on_demos_untrained_policy_sits_on_the_fixed_grid(tmp_path) -> None:
    """An untrained GridS starts at its spread anchors: on demo frames its numbers equal the fixed-grid baseline's
    exactly (the coordinate conversions agree) and its points do not move."""
    from grids_vla.envs.libero.dataset import read_demo
    from grids_vla.envs.libero.generate import generate
    from grids_vla.experiments.points import points_on_demos
    from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

    generate("libero_object", demos_per_task=1, out=tmp_path, image_size=64, seed=0, tasks=[0], max_attempts=3)
    files = sorted(tmp_path.rglob("*_demo.hdf5"))
    cfg = GridSVLAConfig(image_size=64, vision_depth=1, depth=1, instructions=(read_demo(files[0], 0)["instruction"],))
    rep = points_on_demos(GridSVLAPolicy(cfg).eval(), tmp_path, demos_per_task=1, frames_per_demo=3)
    for cam in cfg.cameras:
        policy, fixed = rep[cam]["policy"], rep[cam]["fixed-grid"]
        assert rep[cam]["frames"] == 3 and policy["within_episode"] == 0.0
        assert {k: policy[k] for k in fixed} == fixed
        assert 0.0 <= policy["on_mask"] <= 1.0 and rep[cam]["random"] != fixed
    with pytest.raises(ValueError, match="dense policy"):
        points_on_demos(GridSVLAPolicy(GridSVLAConfig(reducer="dense", image_size=64)), tmp_path)


def test_evaluation_reports_where_the_points_looked(tmp_path) -> None:
    import json

    import torch

    from grids_vla.cli import main as cli_main
    from grids_vla.envs.libero.factory import get_suite
    from grids_vla.experiments.rollout import task_instruction
    from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

    torch.manual_seed(0)
    cfg = GridSVLAConfig(image_size=64, vision_dim=32, vision_depth=1, vision_heads=2, dim=32, depth=1, heads=2, k=4,
                         chunk=4, instructions=(task_instruction(get_suite("libero_object"), 0),))
    ckpt = GridSVLAPolicy(cfg).save_pretrained(tmp_path / "policy")
    out = tmp_path / "eval"
    assert cli_main(["eval", "--checkpoint", str(ckpt), "--suite", "libero_object", "--tasks", "0",
                     "--episodes-per-task", "1", "--max-steps", "12", "--execute", "4", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    (ep,) = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    calls = len(ep["latencies_ms"])
    for cam in cfg.cameras:
        agg, rec = res["points"][cam], ep["points"][cam]
        assert agg["frames"] == rec["frames"] == calls == 3 and agg["episodes"] == 1
        assert agg["within_episode"] == 0.0 and agg["across_episodes"] is None  # untrained: still on its anchors
        assert agg["policy"] == pytest.approx(agg["fixed-grid"]) and agg["random"] != agg["fixed-grid"]
        assert len(rec["mean_px"]) == 4
    assert "Where the points looked" in (out / "results.md").read_text()
