"""The layout of ``grids_vla.envs.libero``: suite facts without a simulator, one robot-state layout for env steps and
demo files, one step-limit rule, and a factory that picks the env class by suite name."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grids_vla.envs.libero.dataset import data_image_size, dataset_statistics, find_demo_files, read_demo
from grids_vla.envs.libero.suites import (
    MAX_STEPS,
    STATE_DIM,
    STATE_KEYS,
    base_suite,
    quat_to_axis_angle,
    state_vector,
    step_limit,
)

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "grids_vla" / "envs"


def test_step_limits_follow_the_base_suite_and_refuse_unknown_suites() -> None:
    assert step_limit("libero_spatial") == 220 and step_limit("libero_10") == 520
    assert step_limit("libero_object_swap") == MAX_STEPS["libero_object"]  # LIBERO-PRO
    assert step_limit("libero_10_lan") == 520
    assert step_limit("libero_goal_liberoplus_camera") == 300  # LIBERO-plus
    assert step_limit("libero_object_liberoplus_*_noise_1?") == 280
    for bad in ("libero_90", "libero_object_colour", "libero_nope", "libero_90_liberoplus_camera", "LIBERO_10"):
        assert base_suite(bad) is None
        with pytest.raises(ValueError, match="no standard step limit.*pass --max-steps"):
            step_limit(bad)


def test_state_vector_layout_for_one_step_and_a_demo() -> None:
    rng = np.random.default_rng(0)
    quat = rng.normal(size=(5, 4))
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    demo = {"ee_pos": rng.normal(size=(5, 3)), "ee_ori": quat_to_axis_angle(quat),
            "gripper_states": rng.normal(size=(5, 2))}
    stacked = state_vector(demo)
    assert stacked.shape == (5, STATE_DIM) and stacked.dtype == np.float64
    np.testing.assert_array_equal(stacked, np.concatenate([demo[k] for k in STATE_KEYS], axis=1))
    for t in range(5):  # an env step carries the quaternion; the vector is the demo's row
        step = {"ee_pos": demo["ee_pos"][t], "ee_quat": quat[t], "gripper_states": demo["gripper_states"][t]}
        np.testing.assert_array_equal(state_vector(step), stacked[t])


def _demo_file(path: Path, lengths: tuple[int, ...], size: int = 8) -> Path:
    import h5py

    rng = np.random.default_rng(len(lengths))
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"problem_name": "p", "language_instruction": "do it"})
        for i, n in enumerate(lengths):
            d = data.create_group(f"demo_{i}")
            d.create_dataset("actions", data=rng.normal(size=(n, 7)))
            d.create_dataset("states", data=rng.normal(size=(n, 10)))
            o = d.create_group("obs")
            o.create_dataset("agentview_rgb", data=rng.integers(0, 255, size=(n, size, size, 3), dtype=np.uint8))
            for k, w in zip(STATE_KEYS, (3, 3, 2)):
                o.create_dataset(k, data=rng.normal(size=(n, w)))
    return path


def test_reader_finds_files_sizes_and_statistics(tmp_path: Path) -> None:
    a = _demo_file(tmp_path / "suite" / "a_demo.hdf5", (3, 4), size=8)
    b = _demo_file(tmp_path / "suite" / "b_demo.hdf5", (5,), size=8)
    _demo_file(tmp_path / "suite" / ".shards" / "c" / "x_demo.hdf5", (2,))  # a running generation's work folder
    assert find_demo_files(tmp_path) == [a, b]
    assert find_demo_files([b, tmp_path / "suite"]) == [b, a, b]
    assert find_demo_files(a) == [a]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_demo_files(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*_demo.hdf5"):
        find_demo_files(tmp_path / "empty")
    assert data_image_size(tmp_path) == 8
    stats = dataset_statistics([a, b])
    states = np.concatenate([state_vector(read_demo(p, i)) for p, i in ((a, 0), (a, 1), (b, 0))])
    np.testing.assert_allclose(stats["state_mean"].numpy(), states.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["state_std"].numpy(), states.std(0), rtol=1e-5, atol=1e-6)
    assert stats["action_mean"].shape == (7,)


def test_suite_facts_and_reader_import_no_simulator() -> None:
    code = ("import sys; import grids_vla.envs.libero.suites, grids_vla.envs.libero.dataset; "
            "print(sorted(m for m in ('mujoco', 'robosuite', 'libero') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


FORBIDDEN = ("grids_vla.policy", "grids_vla.demo", "grids_vla.toy")


def test_envs_import_no_policy_and_no_function_level_package_imports() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        package = ".".join(path.relative_to(PACKAGE.parents[1]).parent.parts)  # e.g. grids_vla.envs.libero
        tree = ast.parse(path.read_text())
        blocks = [n for n in tree.body if isinstance(n, ast.If)]  # e.g. if TYPE_CHECKING:
        top = {id(n) for n in tree.body} | {id(n) for block in blocks for n in ast.walk(block)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(filter(None, (base, node.module or "")))
                assert not module.startswith(FORBIDDEN), (path, module)
                if node.level:  # a package-internal import sits at module level, never inside a function
                    assert id(node) in top, (path, module, node.lineno)
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith(FORBIDDEN) for a in node.names), path


def _libero() -> None:
    pytest.importorskip("libero.libero", reason="LIBERO extra not installed: pip install 'grids-vla[libero]'")


def test_env_observations_and_the_written_demo_share_one_state_layout(tmp_path: Path) -> None:
    _libero()
    from grids_vla.envs.libero.dataset import LiberoDemoDataset
    from grids_vla.envs.libero.factory import make_env
    from grids_vla.envs.libero.generate import Episode, _assemble, _write_shard

    env = make_env("libero_object", 0, render=False)
    try:
        env.seed(0)
        steps = [env.reset()]
        states = [env.get_state()]
        for _ in range(3):
            steps.append(env.step(np.array([0.5, -0.2, 0.3, 0.0, 0.1, 0.2, 1.0]))[0])
            states.append(env.get_state())
    finally:
        env.close()
    obs = {k: np.asarray([o[k] for o in steps]) for k in ("ee_pos", "ee_quat", "gripper_states", "joint_states")}
    shard = tmp_path / "shard.hdf5"
    _write_shard(shard, Episode(np.asarray(states), np.zeros((4, 7)), obs, attempt=0, seed=0))
    info = {"problem_name": "p", "instruction": "do it", "bddl_file": "b.bddl", "env_args": {}}
    task_file = tmp_path / "task_demo.hdf5"
    _assemble(task_file, [shard], info)
    online = np.stack([state_vector(o) for o in steps])
    assert online.shape == (4, STATE_DIM)
    np.testing.assert_array_equal(state_vector(read_demo(task_file, 0)), online)
    item = LiberoDemoDataset([task_file])[2]
    np.testing.assert_array_equal(item["state"].numpy(), online[2].astype(np.float32))


def test_factory_picks_the_env_by_suite_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _libero()
    from grids_vla.envs.libero import env as old_env
    from grids_vla.envs.libero import factory
    from grids_vla.envs.libero.task_env import LiberoTaskEnv

    assert (old_env.make_env, old_env.get_suite) == (factory.make_env, factory.get_suite)  # the old import path
    env = factory.make_env("libero_object", 0, render=False)
    try:
        assert type(env) is LiberoTaskEnv and env.suite == "libero_object"
    finally:
        env.close()
    assert factory.get_suite("libero_object_swap").get_num_tasks() == 10  # LIBERO-PRO: a suite LIBERO registers
    with pytest.raises(ValueError, match="unknown LIBERO suite"):
        factory.make_env("libero_nope", 0)
    calls: list[tuple] = []
    monkeypatch.setattr(factory, "make_plus_env", lambda *args: calls.append(args) or "plus env")
    monkeypatch.setattr(factory, "get_plus_suite", lambda name: f"plus suite {name}")
    plus = "libero_object_liberoplus_camera"
    assert factory.make_env(plus, 3, image_size=64, render=False) == "plus env"
    assert calls == [(plus, 3, 64, ("agentview", "eye_in_hand"), False, False, False, ())]
    assert factory.get_suite(plus) == f"plus suite {plus}"


def test_data_cli_flags_build_the_configs() -> None:
    from grids_vla._cli_fields import picked_fields
    from grids_vla.cli import build_parser
    from grids_vla.envs.libero.export_lerobot import ExportConfig
    from grids_vla.envs.libero.generate import GenerateConfig

    args = build_parser().parse_args(["data", "libero", "--suite", "libero_goal", "--demos-per-task", "2", "--out",
                                      "runs/x", "--tasks", "3", "1", "--msaa", "--max-steps", "90"])
    assert GenerateConfig(**picked_fields(args, GenerateConfig)) == GenerateConfig(
        "libero_goal", 2, "runs/x", tasks=(3, 1), msaa=True, max_steps=90)
    args = build_parser().parse_args(["data", "export-lerobot", "--data", "a", "b", "--out", "ds", "--fps", "10"])
    assert ExportConfig(**picked_fields(args, ExportConfig)) == ExportConfig(["a", "b"], "ds", fps=10)
    with pytest.raises(ValueError, match="unique"):
        GenerateConfig("libero_goal", 1, "x", tasks=(0, 0))
