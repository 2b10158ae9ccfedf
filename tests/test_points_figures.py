"""benchmarks/points/figures.py draws the policy's own points over demo frames, with the numbers of points_on_demos,
and rejects bad input in one line (LIBERO: the targets come from the simulator)."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("libero.libero", reason="LIBERO extra not installed: pip install 'grids-vla[libero]'")
pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install 'grids-vla[viz]'")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "points" / "figures.py"
STEPS = 6  # frames per short demo


def _load():
    spec = importlib.util.spec_from_file_location("points_figures_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> tuple[Path, str]:
    """A task file in the layout of `grids-vla data libero`: two short demos (a few random-ish actions from reset, not
    the expert) of libero_object task 0 at 64 px, with their real simulator states."""
    from grids_vla.envs.libero.factory import get_suite, make_env
    from grids_vla.envs.libero.generate import Episode, _assemble, _write_shard, render_states
    from grids_vla.experiments.rollout import task_instruction

    root = tmp_path_factory.mktemp("demos")
    suite = get_suite("libero_object")
    name, instruction = suite.get_task(0).name, task_instruction(suite, 0)
    env = make_env("libero_object", 0, image_size=64)
    rng = np.random.default_rng(0)
    shards = []
    try:
        for i in range(2):
            env.seed(i)
            env.reset()
            states = [env.get_state()]
            for _ in range(STEPS - 1):
                env.step(np.concatenate([rng.uniform(-1, 1, 6), [1.0]]))
                states.append(env.get_state())
            obs = render_states(env, np.asarray(states))
            shards.append(root / f"shard_{i}.hdf5")
            _write_shard(shards[-1], Episode(np.asarray(states), np.zeros((STEPS, 7)), obs, attempt=0, seed=i))
    finally:
        env.close()
    data = root / "libero_object"
    info = {"problem_name": "libero_tabletop_manipulation", "instruction": instruction,
            "bddl_file": f"libero_object/{name}.bddl", "env_args": {}}
    _assemble(data / f"{name}_demo.hdf5", shards, info)
    return data, instruction


@pytest.fixture(scope="module")
def policy_dir(demos, tmp_path_factory) -> Path:
    """A tiny GridS policy whose point predictor reads the image (random last layer), so its points move."""
    import torch

    from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

    torch.manual_seed(0)
    cfg = GridSVLAConfig(image_size=64, vision_dim=32, vision_depth=1, vision_heads=2, dim=32, depth=1, heads=2, k=4,
                         chunk=4, instructions=(demos[1],))
    policy = GridSVLAPolicy(cfg)
    with torch.no_grad():
        for p in policy.reducer.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return policy.save_pretrained(tmp_path_factory.mktemp("ckpt") / "policy")


def test_figures_are_drawn_from_the_policys_points(demos, policy_dir, tmp_path) -> None:
    import torch

    from grids_vla.envs.libero.dataset import read_demo
    from grids_vla.envs.libero.suites import CAMERA_KEYS, state_vector
    from grids_vla.experiments.points import points_on_demos, points_report, policy_pixels
    from grids_vla.policy import GridSVLAPolicy

    fig_mod = _load()
    data, _ = demos
    out, cache = tmp_path / "figs", tmp_path / "cache"
    argv = ["--checkpoint", f"tiny={policy_dir}", "--data", str(data), "--cameras", "agentview", "eye_in_hand",
            "--demos-per-task", "2", "--frames-per-demo", "3", "--trajectory-frames", str(STEPS), "--cache", str(cache)]
    assert fig_mod.main([*argv, "--out", str(out), "--summary", str(tmp_path / "s.json")]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["points_tiny.png", "points_tiny_eye_in_hand.png", "points_tiny_trajectory.png"]
    for p in out.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size < 200_000

    policy = GridSVLAPolicy.from_pretrained(policy_dir).eval()
    col = pickle.loads((cache / "tiny.pkl").read_bytes())["collected"]  # what the figures were drawn from
    # the points, computed here independently from the demo frames, are the ones the figure holds and draws
    (task_file,) = sorted(data.glob("*_demo.hdf5"))
    for e in range(2):
        demo = read_demo(task_file, e)
        steps = np.linspace(0, STEPS - 1, 3).round().astype(int)
        images = {cam: torch.from_numpy(demo[CAMERA_KEYS[cam]][steps].copy()).permute(0, 3, 1, 2)
                  for cam in policy.config.cameras}
        with torch.no_grad():
            coords = policy(images, torch.from_numpy(state_vector(demo)[steps].astype(np.float32)),
                            [demo["instruction"]] * 3).coords
        pix = policy_pixels(policy, coords)
        for j, cam in enumerate(policy.config.cameras):
            ep = col["episodes"][cam][e]
            np.testing.assert_array_equal(ep["points"], pix[:, j])
            np.testing.assert_array_equal(ep["images"], demo[CAMERA_KEYS[cam]][steps])
            assert list(ep["steps"]) == list(steps) and ep["demo"] == e
    assert np.ptp(col["episodes"]["agentview"][0]["points"], axis=0).max() > 0.01  # the points do move here

    fig = fig_mod.draw_grid("tiny", col, "agentview", rows=4)
    drawn = {c.get_gid(): c.get_offsets() for ax in fig.axes for c in ax.collections if c.get_gid()}
    assert sorted(drawn) == [f"points/0/{t}" for t in range(3)]  # one task file: one row, demo 0
    for t in range(3):
        np.testing.assert_allclose(drawn[f"points/0/{t}"], col["episodes"]["agentview"][0]["points"][t])
    rep = col["reports"]["agentview"]
    assert f"{rep['policy']['within_radius']:.3f}" in fig._suptitle.get_text()
    assert f"fixed grid {rep['fixed-grid']['within_radius']:.3f}" in fig._suptitle.get_text()
    fig = fig_mod.draw_trajectory("tiny", col, ["agentview"])
    paths = {ln.get_gid(): ln.get_xydata() for ax in fig.axes for ln in ax.lines if ln.get_gid()}
    assert len(paths) == policy.config.k
    for i in range(policy.config.k):
        np.testing.assert_allclose(paths[f"path/agentview/{i}"], col["trajectory"]["agentview"]["points"][:, i])

    # the numbers are points_on_demos', to the bit, and demo_frames is what it measures
    ref = points_on_demos(policy, data, demos_per_task=2, frames_per_demo=3)
    assert col["reports"] == ref
    assert {cam: points_report(eps, 64, 12.0, 0, policy.config.grid) for cam, eps in col["episodes"].items()} == ref
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary[0]["label"] == "tiny" and summary[0]["cameras"] == json.loads(json.dumps(ref))

    again = tmp_path / "again"  # drawn again from the cache (no simulator): the same bytes
    assert fig_mod.main([*argv, "--out", str(again)]) == 0
    for name in names:
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_bad_input_is_one_line_naming_the_flag(demos, policy_dir, tmp_path, capsys) -> None:
    from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

    fig_mod = _load()
    data, _ = demos
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    dense = GridSVLAPolicy(GridSVLAConfig(reducer="dense", image_size=64, vision_dim=32, vision_depth=1,
                                          vision_heads=2, dim=32, depth=1, heads=2)).save_pretrained(tmp_path / "dense")
    cases = [
        (["--checkpoint", f"a={tmp_path / 'nope'}", "--data", str(data)], "--checkpoint a=.*nothing there; expected"),
        (["--checkpoint", f"a={empty}", "--data", str(data)], "--checkpoint a=.*found notes.txt; expected a save_pre"),
        (["--checkpoint", str(policy_dir), "--data", str(data)], "--checkpoint .*expected LABEL=PATH"),
        (["--checkpoint", f"a={policy_dir}", f"a={policy_dir}", "--data", str(data)], "label 'a' is given twice"),
        (["--checkpoint", f"a={dense}", "--data", str(data)], "--checkpoint a=.*dense policy"),
        (["--checkpoint", f"a={policy_dir}", "--data", str(tmp_path / "nodata")], "--data .*nothing there; expected a "
                                                                                  "folder of \\*_demo.hdf5"),
        (["--checkpoint", f"a={policy_dir}", "--data", str(empty)], "--data .*found notes.txt but no \\*_demo.hdf5"),
        (["--checkpoint", f"a={policy_dir}", "--data", str(data), "--cameras", "wrist"], "--cameras wrist: expected"),
        (["--checkpoint", f"a={policy_dir}", "--data", str(data), "--rows", "0"], "--rows 0: expected a positive"),
    ]
    for argv, pattern in cases:
        assert fig_mod.main([*argv, "--out", str(tmp_path / "out")]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and re.search(pattern, err), (argv, err)
    assert not (tmp_path / "out").exists()
