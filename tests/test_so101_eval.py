"""``grids-vla eval --env so101``: a tiny policy trained for a few steps on a one-episode SO-101 dataset, evaluated in
and out of distribution through the CLI (files, resume, points, video), the observation mapping against the demo
reader, the target projection against MuJoCo's segmentation, and the errors (needs the ``so101`` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from grids_vla.cli import main
from grids_vla.envs.libero.dataset import LiberoDemoDataset, find_demo_files, read_demo
from grids_vla.envs.so101.env import SO101Env
from grids_vla.envs.so101.expert import Expert
from grids_vla.envs.so101.generate import CAMERA_NAMES, attempt_seed, generate
from grids_vla.envs.so101.scene import COLOURS, sample_scene
from grids_vla.experiments.evaluate_so101 import (
    IN_SEED_BASE,
    LIFT_M,
    POLICY_CAMERAS,
    REACH_M,
    Progress,
    TargetMasks,
    observation_to_batch,
    scene_for,
    target_pixels,
)
from grids_vla.experiments.train import TrainConfig, train
from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

TASK, SIZE = "pick_place_bowl", 32
INSTRUCTIONS = tuple(f"put the {c} cube in the bowl" for c in COLOURS)


@pytest.fixture(autouse=True)
def _one_line_errors(monkeypatch) -> None:
    monkeypatch.delenv("GRIDS_DEBUG", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("so101data")
    assert generate(TASK, 1, out, image_size=SIZE, log=None)["demos"] == 1
    return out / TASK


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = GridSVLAConfig(image_size=SIZE, patch_size=8, vision_dim=16, vision_depth=1, vision_heads=1, dim=16, depth=1,
                         heads=1, mlp_ratio=2.0, k=4, chunk=4, action_dim=4, instructions=INSTRUCTIONS)
    out = tmp_path_factory.mktemp("so101run") / "policy"
    train(TrainConfig(data=str(data), out=str(out), steps=3, batch_size=4, num_workers=0, save_every=3, log_every=1,
                      warmup_steps=0, preload="no"), cfg, log=None)
    return out


def _eval(run_dir: Path, out: Path, *extra: str) -> dict:
    argv = ["eval", "--env", "so101", "--checkpoint", str(run_dir), "--task", TASK, "--max-steps", "6", "--execute",
            "2", "--out", str(out), *extra]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


def _episodes(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]


def test_batch_from_env_equals_the_demo_readers(data) -> None:
    """The policy sees in closed loop what training read from the demo file: replaying a demo's actions from its
    scene, the batch built from each observation equals the dataset item of that frame (cameras, orientation, state,
    instruction)."""
    assert {v: k for k, v in CAMERA_NAMES.items()} == POLICY_CAMERAS
    (path,) = find_demo_files(data)
    import h5py

    with h5py.File(path, "r") as f:
        seed = int(f["data"]["demo_0"].attrs["seed"])
    assert seed < IN_SEED_BASE  # training scenes are never evaluation scenes
    actions = read_demo(path, 0)["actions"]
    ds = LiberoDemoDataset([path])
    env = SO101Env(TASK, image_size=SIZE)
    obs = env.reset(scene=sample_scene(TASK, seed))
    cams = ("agentview", "eye_in_hand")
    for t in range(12):
        batch, item = observation_to_batch(obs, cams, env.instruction), ds[t]
        for cam in cams:
            assert batch[cam].dtype == torch.uint8
            torch.testing.assert_close(batch[cam][0], item[cam], rtol=0, atol=0)
        torch.testing.assert_close(batch["state"][0], item["state"], rtol=0, atol=0)
        assert batch["instruction"] == [item["instruction"]]
        obs, _ = env.step(actions[t])
    env.close()


def test_eval_scenes_are_disjoint_from_training_seeds() -> None:
    seeds = {attempt_seed(s, TASK, j) for s in range(3) for j in range(300)}
    assert max(seeds) < 2**32 <= IN_SEED_BASE
    a, b = scene_for(TASK, "in", 0), scene_for(TASK, "in", 1)
    assert a == sample_scene(TASK, IN_SEED_BASE) and a != b and not a.distractors
    assert scene_for(TASK, "ood", 4).ood_index == 4


def test_targets_project_onto_their_pixels() -> None:
    """A cube's projected centre lies on the cube's pixels in the segmentation mask, in both cameras."""
    env = SO101Env(TASK, image_size=64)
    masks = TargetMasks()
    env.reset(scene=scene_for(TASK, "in", 3))
    for cam in ("front", "wrist"):
        px, m = target_pixels(env, cam), masks(env, cam)
        assert px.shape == (3, 2) and m.shape == (64, 64) and m.any()
        x, y = px[0]
        if 0 <= x < 64 and 0 <= y < 64:
            assert m[int(y), int(x)], cam
    assert masks(env, "front")[tuple(np.floor(target_pixels(env, "front")[0][::-1]).astype(int))]
    env.reset(scene=scene_for(TASK, "ood", 2))  # a new compiled model: the masks follow it
    assert masks(env, "front").any()
    masks.close()
    env.close()


def test_progress_follows_the_expert_and_a_still_arm() -> None:
    """The expert's episode reaches the cube, lifts it and succeeds; an arm that holds still does neither."""
    env = SO101Env(TASK, image_size=SIZE, cameras=())
    try:
        env.reset(scene=sample_scene(TASK, 3))
        still = Progress(env)
        for _ in range(5):
            env.step(np.asarray([0.0, 0.0, 0.0, 0.5]))
            still(env)
        assert still.reach > REACH_M
        assert still.record() == {"reach_cm": round(100 * still.reach, 2), "lift_cm": 0.0, "reached": False,
                                  "lifted": False}
        env.reset(scene=sample_scene(TASK, 3))
        expert, progress, success = Expert(), Progress(env), False
        while not expert.done and env.steps < 160:
            _, success = env.step(expert.act(env))
            progress(env)
        rec = progress.record()
        assert success and rec["reached"] and rec["lifted"] and progress.lift > LIFT_M and progress.reach < 0.01
    finally:
        env.close()


def test_eval_in_and_ood_resume_points_video(run_dir, tmp_path) -> None:
    out = tmp_path / "in"
    res = _eval(run_dir, out, "--scenes", "in", "--episodes", "2", "--video", "1")
    eps = _episodes(out)
    assert [e["episode"] for e in eps] == [0, 1] and [e["scene"] for e in eps] == [f"in/{IN_SEED_BASE}",
                                                                                 f"in/{IN_SEED_BASE + 1}"]
    for e in eps:
        assert e["task_id"] == TASK and e["steps"] == 6 and not e["success"]
        assert len(e["latencies_ms"]) == 3 and len(e["actions_sha256"]) == 64 and e["instruction"] in INSTRUCTIONS
        assert set(e["points"]) == {"agentview", "eye_in_hand"} and e["points"]["agentview"]["frames"] == 3
        assert e["reach_cm"] > 100 * REACH_M and not e["reached"] and e["lift_cm"] == 0 and not e["lifted"]
    assert res["complete"] and res["overall"]["episodes"] == 2 and res["run"]["scenes"] == "in"
    assert res["latency_ms"]["calls"] == 6
    pts = res["points"]
    assert set(pts) == {"agentview", "eye_in_hand"}
    for a in pts.values():
        assert a["frames"] == 6 and 0 <= a["policy"]["within_radius"] <= 1 and "on_mask" in a["random"]
    md = (out / "results.md").read_text()
    assert "Where the points looked" in md and f"in/{IN_SEED_BASE + 1}" in md
    assert res["progress"] == {"episodes": 2, "reached": 0, "lifted": 0, "success": 0}
    assert "How far the episodes got" in md and "closest to cube (cm)" in md
    assert eps[0]["visuals"] and all((out / v).stat().st_size > 0 for v in eps[0]["visuals"])
    assert "visuals" not in eps[1]
    before = (out / "episodes.jsonl").read_text()
    _eval(run_dir, out, "--scenes", "in", "--episodes", "2", "--video", "1")  # resume: nothing new to play
    assert (out / "episodes.jsonl").read_text() == before
    assert main(["eval", "--env", "so101", "--checkpoint", str(run_dir), "--task", TASK, "--scenes", "ood",
                 "--max-steps", "6", "--out", str(out)]) == 2  # other settings in the same folder

    out = tmp_path / "ood"
    res = _eval(run_dir, out, "--scenes", "ood", "--episodes", "1")
    (e,) = _episodes(out)
    assert e["scene"] == "ood/0" and e["distractors"] and res["points"] and res["run"]["perturbation"]

    out = tmp_path / "blind"  # the front camera grey: the same scene, other actions
    res = _eval(run_dir, out, "--scenes", "in", "--episodes", "1", "--blind", "agentview")
    assert res["run"]["blind"] == ["agentview"] and _episodes(out)[0]["actions_sha256"] != eps[0]["actions_sha256"]


def _one_line(capsys, argv: list[str], *named: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("grids-vla eval: error: "), err
    for text in named:
        assert text in err, (text, err)


def test_cli_errors(tmp_path, capsys) -> None:
    cfg = GridSVLAConfig(image_size=SIZE, patch_size=8, vision_dim=8, vision_depth=1, vision_heads=1, dim=8, depth=1,
                         heads=1, k=2, chunk=2, instructions=INSTRUCTIONS)
    libero_like = GridSVLAPolicy(cfg).save_pretrained(tmp_path / "p7")  # 7-D actions
    so101 = GridSVLAPolicy(GridSVLAConfig(**{**cfg.to_dict(), "action_dim": 4,
                                             "instructions": INSTRUCTIONS[:1]})).save_pretrained(tmp_path / "p4")
    base = ["eval", "--checkpoint", str(libero_like), "--out", str(tmp_path / "o")]
    _one_line(capsys, [*base, "--env", "mujoco"], "--env: found 'mujoco'", "libero, so101")
    _one_line(capsys, [*base, "--env", "so101", "--scenes", "mid"], "--scenes: found 'mid'")
    _one_line(capsys, [*base, "--env", "so101", "--task", "pour"], "--task: found 'pour'")
    _one_line(capsys, [*base, "--env", "so101", "--scenes", "ood", "--episodes", "22"], "21 OOD scenes")
    _one_line(capsys, [*base, "--env", "so101", "--suite", "libero_goal", "--workers", "2"], "--suite, --workers",
              "LIBERO flags")
    _one_line(capsys, [*base, "--scenes", "in"], "--scenes", "SO-101 flags")
    _one_line(capsys, [*base, "--env", "so101"], "4 ([dx, dy, dz, grasp])", "--action-dim 4")
    _one_line(capsys, ["eval", "--checkpoint", str(so101), "--env", "so101", "--blind", "front", "--scenes", "ood",
                       "--episodes", "1", "--out", str(tmp_path / "o")], "--blind: found ['front']", "agentview")
    _one_line(capsys, ["eval", "--checkpoint", str(so101), "--env", "so101", "--out", str(tmp_path / "o")],
              "trained without the instructions")
