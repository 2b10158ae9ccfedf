"""The LeRobot path on the simulated SO-101: scripted-expert demos -> LeRobotDataset -> ``lerobot-train`` (``act``,
``act_grids``, a tiny ``smolvla_grids``; 2 steps, offline, CPU) -> ``python -m lerobot_policy_grids.so101 eval`` of the
checkpoint in one in-distribution scene and one OOD scene (needs grids-vla's ``so101`` extra, MuJoCo with EGL).

Each policy type costs about 30 s here (training subprocess, one evaluation subprocess, one in-process), so none is
skipped."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

TASK, SIZE, MAX_STEPS, CHUNK = "pick_place_bowl", 64, 12, 5
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
       "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYOPENGL_PLATFORM": os.environ.get("MUJOCO_GL", "egl")}


def run(args: list[str], timeout: int = 300) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=ENV)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def so101(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Two expert demos of the bowl task at 64 px, exported through the plugin's ``export`` command."""
    from grids_vla.envs.so101.generate import generate

    root = tmp_path_factory.mktemp("so101")
    assert generate(TASK, 2, root / "data", image_size=SIZE, log=None)["demos"] == 2
    out = run([str(BIN / "python"), "-m", "lerobot_policy_grids.so101", "export", "--data",
               str(root / "data" / TASK), "--out", str(root / "ds"), "--repo-id", "local/so101_test"])
    assert "2 episodes" in out
    return SimpleNamespace(root=root, data=root / "data" / TASK, ds=root / "ds")


def test_observation_is_the_exported_datasets_frame(so101: SimpleNamespace) -> None:
    """Replaying the first exported demo from its scene, the evaluation's observation equals the LeRobotDataset item
    of every frame: keys, camera images (float CHW in [0, 1], upright), state and task."""
    import h5py
    from grids_vla.envs.libero.dataset import find_demo_files, read_demo
    from grids_vla.envs.so101.env import SO101Env
    from grids_vla.envs.so101.scene import sample_scene
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from lerobot_policy_grids.so101 import so101_observation

    first = find_demo_files(so101.data)[0]  # the export writes the files in this order: episode 0 is its demo_0
    with h5py.File(first, "r") as f:
        seed = int(f["data"]["demo_0"].attrs["seed"])
    actions = read_demo(first, 0)["actions"]
    ds = LeRobotDataset("local/so101_test", root=so101.ds)
    env = SO101Env(TASK, image_size=SIZE)
    obs = env.reset(scene=sample_scene(TASK, seed))
    try:
        for t in range(10):
            item = ds[t]
            assert int(item["episode_index"]) == 0 and int(item["frame_index"]) == t
            batch = so101_observation(obs, ("front", "wrist"), env.instruction)
            assert set(batch) == {"observation.images.front", "observation.images.wrist", "observation.state", "task"}
            for key in ("observation.images.front", "observation.images.wrist", "observation.state"):
                assert batch[key].dtype == torch.float32 and batch[key].shape == (1, *item[key].shape)
                torch.testing.assert_close(batch[key][0], item[key], rtol=0, atol=0)
            assert batch["task"] == [item["task"]]
            grey = so101_observation(obs, ("front", "wrist"), env.instruction, blind=("wrist",))
            assert torch.equal(grey["observation.images.front"], batch["observation.images.front"])
            assert torch.all(grey["observation.images.wrist"] == 128 / 255)  # BLIND_VALUE, as the library's
            obs, _ = env.step(actions[t])
    finally:
        env.close()


TRAIN = ["--policy.push_to_hub=false", "--policy.device=cpu", f"--policy.chunk_size={CHUNK}",
         f"--policy.n_action_steps={CHUNK}", "--steps=2", "--batch_size=2", "--num_workers=0", "--log_freq=1",
         "--save_freq=2", "--env_eval_freq=0", "--wandb.enable=false", "--seed=0"]
ACT = ["--policy.dim_model=32", "--policy.n_heads=2", "--policy.dim_feedforward=64", "--policy.n_encoder_layers=1",
       "--policy.n_decoder_layers=1", "--policy.latent_dim=8", "--policy.pretrained_backbone_weights=null"]


def _policy_flags(policy: str, root: Path) -> list[str]:
    if policy == "act":
        return ACT
    if policy == "act_grids":
        return [*ACT, "--policy.grids_k=2"]
    from lerobot_policy_grids.offline import write_local_smolvlm

    vlm = write_local_smolvlm(root / "tiny_vlm", "tiny")
    return [f"--policy.vlm_model_name={vlm}", "--policy.load_vlm_weights=false",
            f"--policy.resize_imgs_with_padding=[{SIZE}, {SIZE}]", "--policy.grids_k=8",
            "--policy.grids_conditioning=language"]


def _episodes(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("policy", ["act", "act_grids", "smolvla_grids"])
def test_lerobot_train_then_evaluate_in_and_ood(policy: str, so101: SimpleNamespace, tmp_path: Path) -> None:
    from grids_vla.envs.so101.scene import ood_scenes, sample_scene
    from grids_vla.experiments.evaluate_so101 import IN_SEED_BASE
    from grids_vla.experiments.stats import wilson_interval

    from lerobot_policy_grids.so101 import main

    train_dir = tmp_path / "train"
    out = run([str(BIN / "lerobot-train"), "--dataset.repo_id=local/so101_test", f"--dataset.root={so101.ds}",
               f"--policy.type={policy}", *TRAIN, *_policy_flags(policy, tmp_path), f"--output_dir={train_dir}"])
    assert "step:2 " in out
    ckpt = train_dir / "checkpoints" / "last" / "pretrained_model"
    grids = policy != "act"
    calls = math.ceil(MAX_STEPS / CHUNK)  # select_action runs the model once per chunk of CHUNK steps

    # in distribution, through the module's command line, with a video
    ev_in = tmp_path / "eval_in"
    log = run([str(BIN / "python"), "-m", "lerobot_policy_grids.so101", "eval", "--policy-path", str(ckpt),
               "--task", TASK, "--scenes", "in", "--episodes", "1", "--max-steps", str(MAX_STEPS), "--video", "1",
               "--out", str(ev_in)])
    assert "success 0/1" in log or "success 1/1" in log
    # the OOD scene in-process, given the lerobot-train output folder
    ev_ood = tmp_path / "eval_ood"
    assert main(["eval", "--policy-path", str(train_dir), "--task", TASK, "--scenes", "ood", "--episodes", "1",
                 "--max-steps", str(MAX_STEPS), "--out", str(ev_ood)]) == 0

    for out_dir, scenes, scene_id, scene in ((ev_in, "in", f"in/{IN_SEED_BASE}", sample_scene(TASK, IN_SEED_BASE)),
                                             (ev_ood, "ood", "ood/0", ood_scenes(TASK)[0])):
        res = json.loads((out_dir / "results.json").read_text())
        run_info, o = res["run"], res["overall"]
        assert run_info["policy_type"] == policy and run_info["scenes"] == scenes and run_info["task"] == TASK
        assert run_info["checkpoint"] == str(ckpt) and run_info["image_size"] == SIZE
        assert run_info["env_cameras"] == ["front", "wrist"] and run_info["execute"] == CHUNK
        assert run_info["reducer"] == ("grids" if grids else "dense")
        (ep,) = _episodes(out_dir)
        assert (ep["episode"], ep["scene"], ep["task_id"], ep["scenes"]) == (0, scene_id, TASK, scenes)
        assert ep["instruction"] == scene.instruction and len(ep["distractors"]) == len(scene.distractors)
        assert ep["steps"] == MAX_STEPS or (ep["success"] and ep["steps"] < MAX_STEPS)
        assert len(ep["latencies_ms"]) == math.ceil(ep["steps"] / CHUNK) and len(ep["actions_sha256"]) == 64
        assert res["complete"] and o["episodes"] == 1 and o["successes"] == int(ep["success"])
        assert o["ci95"] == list(wilson_interval(o["successes"], 1)) and res["latency_ms"]["calls"] == calls
        if grids:
            assert run_info["points"] == "recorded" and run_info["k"] == (2 if policy == "act_grids" else 8)
            assert set(ep["points"]) == {"front", "wrist"}
            for cam, p in ep["points"].items():
                assert p["frames"] == calls and len(p["mean_px"]) == run_info["k"]
                assert all(0 <= x <= SIZE for pt in p["mean_px"] for x in pt)
                for kind in ("policy", "fixed-grid", "random"):
                    assert 0 <= p[kind]["within_radius"] <= 1 and 0 <= p[kind]["on_mask"] <= 1
                assert res["points"][cam]["frames"] == calls
            assert "Where the points looked" in (out_dir / "results.md").read_text()
        else:
            assert run_info["points"] == "not recorded: not a GridS policy"
            assert "points" not in ep and res["points"] is None
        assert scene_id in (out_dir / "results.md").read_text()
    (ep,) = _episodes(ev_in)
    assert ep["visuals"] == [f"videos/{TASK}_in000.mp4"] and (ev_in / ep["visuals"][0]).stat().st_size > 0
    assert ood_scenes(TASK)[0].distractors  # the OOD record above has them

    # a rerun resumes (nothing left to play); other settings in the same folder are refused
    before = (ev_ood / "episodes.jsonl").read_text()
    assert main(["eval", "--policy-path", str(ckpt), "--task", TASK, "--scenes", "ood", "--episodes", "1",
                 "--max-steps", str(MAX_STEPS), "--out", str(ev_ood)]) == 0
    assert (ev_ood / "episodes.jsonl").read_text() == before
    assert main(["eval", "--policy-path", str(ckpt), "--task", TASK, "--scenes", "ood", "--episodes", "1",
                 "--max-steps", "7", "--out", str(ev_ood)]) == 2
    if policy == "act_grids":  # both cameras grey: recorded in the run; a camera the policy lacks is refused
        blind = ["eval", "--policy-path", str(ckpt), "--task", TASK, "--scenes", "ood", "--episodes", "1",
                 "--max-steps", str(MAX_STEPS), "--out", str(tmp_path / "blind")]
        assert main([*blind, "--blind", "front", "wrist"]) == 0
        res = json.loads((tmp_path / "blind" / "results.json").read_text())
        assert res["run"]["blind"] == ["front", "wrist"] and res["overall"]["episodes"] == 1
        assert main([*blind[:-1], str(tmp_path / "blind_top"), "--blind", "top"]) == 2


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str], *named: str) -> None:
    from lerobot_policy_grids.so101 import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("lerobot_policy_grids.so101 "), err
    for text in named:
        assert text in err, (text, err)


def test_errors_name_the_flag_or_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from lerobot.configs.types import FeatureType, PolicyFeature

    from lerobot_policy_grids.so101 import check_features

    monkeypatch.delenv("GRIDS_DEBUG", raising=False)
    base = ["eval", "--out", str(tmp_path / "o")]
    _one_line(capsys, [*base, "--policy-path", str(tmp_path / "nothing")], "--policy-path", "config.json")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    _one_line(capsys, [*base, "--policy-path", str(tmp_path / "half")], "no model.safetensors")
    _one_line(capsys, [*base, "--policy-path", "x", "--scenes", "mid"], "--scenes: found 'mid'")
    _one_line(capsys, [*base, "--policy-path", "x", "--task", "pour"], "--task: found 'pour'")
    _one_line(capsys, [*base, "--policy-path", "x", "--scenes", "ood", "--episodes", "22"], "21 OOD scenes")
    _one_line(capsys, [*base, "--policy-path", "x", "--seed", "-1"], "--seed: found -1")
    _one_line(capsys, ["export", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "ds")], "none")

    def cfg(inputs: dict[str, tuple[int, ...]], action: tuple[int, ...] = (4,)) -> SimpleNamespace:
        feats = {k: PolicyFeature(type=FeatureType.VISUAL if "images" in k else FeatureType.STATE, shape=s)
                 for k, s in inputs.items()}
        return SimpleNamespace(input_features=feats,
                               output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=action)})

    ok = {"observation.images.front": (3, 64, 64), "observation.images.wrist": (3, 64, 64), "observation.state": (8,)}
    assert check_features(cfg(ok), "c.json") == (("front", "wrist"), 64)
    assert check_features(cfg({"observation.state": (8,)}), "c.json") == ((), None)
    for inputs, action, named in (
        ({"observation.images.top": (3, 64, 64)}, (4,), "observation.images.top"),
        ({**ok, "observation.state": (6,)}, (4,), "observation.state (6,)"),
        ({"observation.images.front": (3, 48, 64)}, (4,), "(3, S, S)"),
        ({"observation.images.front": (3, 64, 64), "observation.images.wrist": (3, 32, 32)}, (4,), "one"),
        (ok, (7,), "output features"),
    ):
        with pytest.raises(ValueError, match="c.json") as exc:
            check_features(cfg(inputs, action), "c.json")
        assert named in str(exc.value) and "\n" not in str(exc.value)


def test_video_flag_is_checked_like_the_librarys_without_needing_imageio(monkeypatch) -> None:
    """The plugin writes its videos with LeRobot's writer: a bad --video is the library's one-line error, and a good
    one does not ask for imageio."""
    from lerobot_policy_grids.so101 import SO101LeRobotEvalConfig

    for bad in (-2, 1.5, True):
        with pytest.raises(ValueError, match=rf"^--video: found {bad!r}, expected a number of episodes"):
            SO101LeRobotEvalConfig(policy_path="p", video=bad)
    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.setitem(sys.modules, "imageio.v2", None)
    assert SO101LeRobotEvalConfig(policy_path="p", video=2).video == 2
