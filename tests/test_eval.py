"""``grids-vla eval``: one short closed-loop LIBERO episode of a tiny random policy through the CLI, with and without
a perturbation, the Wilson interval, the observation format and clear errors (needs the ``[libero]`` extra)."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("libero.libero", reason="LIBERO extra not installed: pip install 'grids-vla[libero]'")

from grids_vla.cli import main as cli_main  # noqa: E402
from grids_vla.envs.libero.data import quat_to_axis_angle  # noqa: E402
from grids_vla.envs.libero.env import get_suite  # noqa: E402
from grids_vla.experiments.rollout import BLIND_VALUE  # noqa: E402
from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy  # noqa: E402
from grids_vla.policy.evaluation import (  # noqa: E402
    default_max_steps,
    observation_to_batch,
    parse_perturbation,
    run_episode,
    task_instruction,
    to_markdown,
    wilson_interval,
)

SUITE, TASK, SIZE, STEPS = "libero_object", 0, 64, 12


@pytest.fixture(autouse=True)
def _raise_errors(monkeypatch) -> None:
    """The CLI turns expected errors into one line and exit code 2 (tests/test_errors.py); here they propagate, so
    each test can match the exception it expects."""
    monkeypatch.setenv("GRIDS_DEBUG", "1")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    instruction = task_instruction(get_suite(SUITE), TASK)
    cfg = GridSVLAConfig(image_size=SIZE, patch_size=8, vision_dim=32, vision_depth=1, vision_heads=2, dim=32, depth=2,
                         heads=2, mlp_ratio=2.0, k=4, chunk=4, instructions=(instruction,))
    policy = GridSVLAPolicy(cfg)
    policy.set_normalization(torch.zeros(8), torch.ones(8), torch.zeros(7), torch.full((7,), 0.3))
    return policy.save_pretrained(tmp_path_factory.mktemp("ckpt") / "policy")


def _eval(ckpt: Path, out: Path, *extra: str) -> dict:
    argv = ["eval", "--checkpoint", str(ckpt), "--suite", SUITE, "--episodes-per-task", "1", "--tasks", str(TASK),
            "--max-steps", str(STEPS), "--settle-steps", "2", "--execute", "3", "--out", str(out), *extra]
    assert cli_main(argv) == 0
    return json.loads((out / "results.json").read_text())


def _episodes(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]


def _check(res: dict, out: Path) -> None:
    """One finished episode: the results agree with the episode record, and the record with the run's settings."""
    (ep,) = _episodes(out)
    assert ep["task_id"] == TASK and ep["episode"] == ep["init_state"] == 0
    o = res["overall"]
    assert res["complete"] and o["episodes"] == 1 and o["successes"] == int(ep["success"])
    assert o["success_rate"] == o["successes"] and o["ci95"] == list(wilson_interval(o["successes"], 1))
    t = res["tasks"][str(TASK)]
    assert (t["episodes"], t["successes"], t["ci95"]) == (1, o["successes"], o["ci95"])
    assert o["mean_episode_length"] == t["mean_episode_length"] == ep["steps"]
    # a success must end the episode early (the step that succeeds is the last); a failure runs to the limit
    assert (ep["steps"] < STEPS) if ep["success"] else (ep["steps"] == STEPS)
    lat = res["latency_ms"]
    # 3 of each chunk executed per call: ceil(steps / 3) calls, each timed
    assert lat["calls"] == len(ep["latencies_ms"]) == -(-ep["steps"] // 3)
    assert lat["median"] == statistics.median(ep["latencies_ms"]) and min(ep["latencies_ms"]) > 0
    assert res["run"]["max_steps"] == STEPS and res["run"]["execute"] == 3
    md = (out / "results.md").read_text()
    assert f"**{o['successes']}/1**" in md and t["instruction"] in md
    assert f"95 % Wilson {100 * o['ci95'][0]:.1f}-{100 * o['ci95'][1]:.1f} %" in md
    assert f"median {lat['median']:.2f} ms over {lat['calls']} calls" in md
    assert f"({res['run']['reducer']}, k=4, {SIZE} px)" in md
    assert f"(dense, all tokens, {SIZE} px)" in to_markdown({**res, "run": {**res["run"], "reducer": "dense"}})


def test_one_episode_through_the_cli_then_resume(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "plain"
    res = _eval(checkpoint, out)
    _check(res, out)
    assert res["run"]["perturbation"] is None
    assert "visuals" not in json.loads((out / "episodes.jsonl").read_text()) and not (out / "videos").exists()
    # resume: the finished episode is reused, not re-run (same latencies), and other settings are refused
    again = _eval(checkpoint, out)
    assert again["latency_ms"] == res["latency_ms"] and again["overall"] == res["overall"]
    with pytest.raises(ValueError, match="other settings"):
        _eval(checkpoint, out, "--perturbation", "lighting")
    with pytest.raises(ValueError, match="other settings"):
        _eval(checkpoint, out, "--blind", "agentview")


def test_blind_cameras_are_shown_grey(checkpoint: Path, tmp_path: Path) -> None:
    """--blind: the same episode with both cameras grey acts otherwise, is recorded as such, and resumes."""
    plain = _eval(checkpoint, tmp_path / "plain")
    out = tmp_path / "blind"
    res = _eval(checkpoint, out, "--blind", "agentview", "eye_in_hand")
    _check(res, out)
    assert res["run"]["blind"] == ["agentview", "eye_in_hand"] and "blind" not in plain["run"]
    (ep,) = _episodes(out)
    (ep0,) = _episodes(tmp_path / "plain")
    assert ep["actions_sha256"] != ep0["actions_sha256"]
    assert _eval(checkpoint, out, "--blind", "agentview", "eye_in_hand")["latency_ms"] == res["latency_ms"]


def test_video_of_the_first_episode_reads_back(checkpoint: Path, tmp_path: Path) -> None:
    imageio = pytest.importorskip("imageio.v2", reason="video extra not installed: pip install 'grids-vla[video]'")
    pytest.importorskip("imageio_ffmpeg", reason="video extra not installed: pip install 'grids-vla[video]'")
    out = tmp_path / "video"
    res = _eval(checkpoint, out, "--episodes-per-task", "2", "--video", "1")
    assert res["overall"]["episodes"] == 2
    first, second = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert first["visuals"] == ["videos/task00_ep000.png", "videos/task00_ep000.mp4"] and "visuals" not in second
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["task00_ep000.mp4", "task00_ep000.png"]  # no temp
    frames = imageio.mimread(str(out / "videos" / "task00_ep000.mp4"), memtest=False)
    assert len(frames) == first["steps"] + 1  # every observation from the first policy call to the last one
    assert frames[0].shape == (2 * SIZE, 2 * 2 * SIZE, 3)  # two cameras side by side, upscaled 2x
    assert max(f.max() for f in frames) > 200  # the white sampling-point rings survive the encoding


def test_worker_processes_play_the_same_episodes(checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg", reason="video extra not installed: pip install 'grids-vla[video]'")
    seq = _eval(checkpoint, tmp_path / "seq", "--episodes-per-task", "3")
    out = tmp_path / "par"
    par = _eval(checkpoint, out, "--episodes-per-task", "3", "--workers", "2", "--video", "1")
    assert par["complete"] and par["run"]["workers"] == 2 and par["overall"]["episodes"] == 3
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert sorted(r["episode"] for r in records) == [0, 1, 2]
    by_ep = {r["episode"]: r for r in records}
    assert by_ep[0]["visuals"] == ["videos/task00_ep000.png", "videos/task00_ep000.mp4"]  # written by a worker
    assert (out / "videos" / "task00_ep000.mp4").stat().st_size > 0
    assert "visuals" not in by_ep[1] and "visuals" not in by_ep[2]
    seq_eps = {json.loads(line)["episode"]: json.loads(line)
               for line in (tmp_path / "seq" / "episodes.jsonl").read_text().splitlines()}
    for i in range(3):  # the same actions, step for step, whichever process played the episode after which other
        assert (by_ep[i]["success"], by_ep[i]["steps"]) == (seq_eps[i]["success"], seq_eps[i]["steps"])
        assert by_ep[i]["actions_sha256"] == seq_eps[i]["actions_sha256"], f"episode {i}"
        assert len(by_ep[i]["latencies_ms"]) == len(seq_eps[i]["latencies_ms"])
    assert len({r["actions_sha256"] for r in records}) == 3  # the digest tells episodes apart
    assert "2 worker processes" in (out / "results.md").read_text()
    assert seq["overall"]["successes"] == par["overall"]["successes"]
    # resuming with another number of workers reuses the finished episodes
    again = _eval(checkpoint, out, "--episodes-per-task", "3", "--workers", "1", "--video", "1")
    assert again["latency_ms"] == par["latency_ms"]


def test_video_without_imageio_is_a_clear_error(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    import sys

    from grids_vla.policy.evaluation import EvalConfig

    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.setitem(sys.modules, "imageio.v2", None)
    with pytest.raises(ImportError, match="pip install imageio imageio-ffmpeg"):
        _eval(checkpoint, tmp_path / "nv", "--video", "1")
    assert not (tmp_path / "nv").exists()  # refused before anything ran
    assert EvalConfig(checkpoint="c").video == 0 and EvalConfig(checkpoint="c", video=False).video == 0
    from grids_vla.experiments.evaluate_so101 import SO101EvalConfig

    for config in (EvalConfig, SO101EvalConfig):  # both evaluations check --video with one helper, one message
        for bad in (-2, 1.5, "1"):
            with pytest.raises(ValueError, match=rf"^--video: found {bad!r}, expected a number of episodes"):
                config(checkpoint="c", video=bad)


def test_one_episode_with_a_perturbation(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "lit"
    res = _eval(checkpoint, out, "--perturbation", "lighting:0.8")
    _check(res, out)
    assert res["run"]["perturbation"] == "lighting:0.8"
    assert "lighting:0.8" in (out / "results.md").read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_libero_pro_suite_end_to_end(checkpoint: Path, tmp_path: Path, workers: int) -> None:
    """``--perturbation pro:swap`` evaluates on the LIBERO-PRO suite, in one process and in worker processes (two
    episodes then, so that the pool really plays them); the episode runner once re-parsed the spec on the already
    resolved suite and crashed on both paths."""
    out = tmp_path / f"pro_{workers}"
    res = _eval(checkpoint, out, "--perturbation", "pro:swap", "--workers", str(workers),
                "--episodes-per-task", str(workers))
    pro = f"{SUITE}_swap"
    assert res["run"]["suite"] == pro and res["run"]["perturbation"] == "pro:swap"
    assert res["run"]["workers"] == workers and res["run"]["instructions"] == {
        str(TASK): task_instruction(get_suite(pro), TASK)}
    assert res["complete"] and res["overall"]["episodes"] == workers
    eps = _episodes(out)
    assert sorted(e["init_state"] for e in eps) == list(range(workers))
    assert all(len(e["latencies_ms"]) == -(-e["steps"] // 3) for e in eps)
    md = (out / "results.md").read_text()
    assert md.startswith(f"# Evaluation: {pro} (complete)") and "perturbation: pro:swap;" in md
    assert ("2 worker processes" in md) == (workers == 2)


def test_flow_head_checkpoint_evaluates_reproducibly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    instruction = task_instruction(get_suite(SUITE), TASK)
    cfg = GridSVLAConfig(image_size=SIZE, patch_size=8, vision_dim=32, vision_depth=1, vision_heads=2, dim=32, depth=2,
                         heads=2, mlp_ratio=2.0, k=4, chunk=4, instructions=(instruction,), action_head="flow",
                         flow_steps=3)
    policy = GridSVLAPolicy(cfg)
    policy.set_normalization(torch.zeros(8), torch.ones(8), torch.zeros(7), torch.full((7,), 0.3))
    ckpt = policy.save_pretrained(tmp_path / "flow")
    res = _eval(ckpt, tmp_path / "a")
    _check(res, tmp_path / "a")
    assert res["run"]["chunk"] == 4
    # the sampling noise is seeded per episode: a rerun of an episode takes the very same actions
    env = _FakeEnv()
    policy.eval()

    def rollout(init: int, record: bool = False) -> tuple[dict, np.ndarray]:
        env.actions = []
        ep = run_episode(env, policy, init, max_steps=10, execute=3, settle_steps=1, record=record, points=False)
        return ep, np.stack(env.actions)

    first, actions = rollout(3, record=True)
    assert actions.shape == (11, 7) and np.array_equal(rollout(3)[1], actions)  # 1 settle + 10 policy steps
    assert not np.array_equal(rollout(4)[1], actions)  # another episode draws other noise
    assert first["steps"] == 10 and len(first["video"]) == 11  # steps + 1 frames
    assert len(first["frames"]) == 4 and first["frames"][0]["coords"].shape == (1, 2, 4, 2)


class _FakeEnv:
    """Stands in for a LIBERO env: fixed random observations, records every action it is given, never succeeds."""

    instruction = ""

    def __init__(self) -> None:
        self.actions: list[np.ndarray] = []
        rng = np.random.default_rng(0)
        self.obs = {"agentview": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
                    "eye_in_hand": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
                    "ee_pos": np.zeros(3), "ee_quat": np.array([0.0, 0.0, 0.0, 1.0]), "gripper_states": np.zeros(2)}

    def reset(self, init_index: int) -> dict:
        self.instruction = task_instruction(get_suite(SUITE), TASK)
        return self.obs

    def step(self, action: np.ndarray) -> tuple:
        self.actions.append(np.array(action))
        return self.obs, 0.0, False, {}


def test_step_limits_and_perturbation_specs() -> None:
    assert [default_max_steps(s) for s in ("libero_spatial", "libero_object", "libero_goal", "libero_10")] == \
        [220, 280, 300, 520]
    assert default_max_steps("libero_object_swap") == 280
    suite, ps = parse_perturbation("table_color:0.3", SUITE)
    assert suite == SUITE and ps[0].name == "table_color" and ps[0].severity == pytest.approx(0.3)
    assert parse_perturbation("camera_shift", SUITE)[1][0].severity == 0.5
    assert parse_perturbation("pro:swap", SUITE) == ("libero_object_swap", [])
    with pytest.raises(ValueError, match="severity"):
        parse_perturbation("lighting:strong", SUITE)


def test_observation_matches_the_demo_reader_format() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    quat = rng.normal(size=4)
    quat /= np.linalg.norm(quat)
    obs = {"agentview": img, "eye_in_hand": img[::-1], "ee_pos": rng.normal(size=3), "ee_quat": quat,
           "gripper_states": rng.normal(size=2)}
    b = observation_to_batch(obs, ("agentview", "eye_in_hand"), "do it")
    assert b["agentview"].dtype == torch.uint8 and b["agentview"].shape == (1, 3, SIZE, SIZE)
    assert torch.equal(b["agentview"][0].permute(1, 2, 0), torch.from_numpy(img))  # no flip, no resize
    assert torch.equal(b["eye_in_hand"][0].permute(1, 2, 0), torch.from_numpy(img[::-1].copy()))
    expected = np.concatenate([obs["ee_pos"], quat_to_axis_angle(quat), obs["gripper_states"]]).astype(np.float32)
    assert torch.equal(b["state"][0], torch.from_numpy(expected)) and b["instruction"] == ["do it"]
    blind = observation_to_batch(obs, ("agentview", "eye_in_hand"), "do it", blind=("agentview",))
    assert blind["agentview"].shape == b["agentview"].shape and bool((blind["agentview"] == BLIND_VALUE).all())
    assert torch.equal(blind["eye_in_hand"], b["eye_in_hand"]) and torch.equal(blind["state"], b["state"])


def test_bad_input_raises_clear_errors(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _eval(tmp_path / "nope", tmp_path / "o1")
    with pytest.raises(FileNotFoundError, match="neither a policy checkpoint"):
        _eval(tmp_path, tmp_path / "o1")
    with pytest.raises(ValueError, match="unknown LIBERO suite"):
        cli_main(["eval", "--checkpoint", str(checkpoint), "--suite", "libero_nope", "--out", str(tmp_path / "o2")])
    with pytest.raises(IndexError, match="out of range"):
        cli_main(["eval", "--checkpoint", str(checkpoint), "--suite", SUITE, "--tasks", "10",
                  "--out", str(tmp_path / "o3")])
    with pytest.raises(ValueError, match="unknown perturbation"):
        _eval(checkpoint, tmp_path / "o4", "--perturbation", "fog")
    with pytest.raises(ValueError, match="trained without the instructions"):
        cli_main(["eval", "--checkpoint", str(checkpoint), "--suite", SUITE, "--tasks", "1",
                  "--out", str(tmp_path / "o5")])
    with pytest.raises(ValueError, match="official init states"):
        _eval(checkpoint, tmp_path / "o6", "--episodes-per-task", "51")
    with pytest.raises(ValueError, match=r"--blind: found \['wrist'\], expected distinct cameras of the policy"):
        _eval(checkpoint, tmp_path / "o7", "--blind", "wrist")


def test_mp4_frame_drawing_marks_the_points() -> None:
    from grids_vla.policy.evaluation import draw_points_np

    img = np.zeros((32, 32, 3), dtype=np.uint8)
    out = draw_points_np(img, torch.tensor([[0.5, 0.5]]), (4, 4), align_corners=False, scale=2)
    assert out.shape == (64, 64, 3) and out.max() == 255
    ys, xs = np.nonzero(out[..., 0])
    assert abs(ys.mean() - 32) < 1.5 and abs(xs.mean() - 32) < 1.5  # a ring centred on the image centre
    assert draw_points_np(img, None, (4, 4), True).max() == 0
