"""``benchmarks/points/closed_loop_still.py``: a replay is archived only when it played the study's episodes with the
study's policy, and the table pools the per-episode differences over seeds (the simulator is replaced by a fake
evaluation that writes episode records)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def still(monkeypatch, tmp_path):
    name = "closed_loop_still_bench"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "points" / "closed_loop_still.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, mod)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "STUDY", tmp_path / "study")
    monkeypatch.setattr(mod, "ARCHIVE", tmp_path / "archive")
    return mod


def _cell(policy: float, fixed: float, still: float, frames: int = 4) -> dict:
    return {"frames": frames, "policy": {"on_mask": policy}, "fixed-grid": {"on_mask": fixed},
            "still": {"on_mask": still}}


def _episode(task: int, digest: str, on: tuple[float, float, float] = (0.5, 0.25, 0.25)) -> dict:
    return {"task_id": task, "init_state": 0, "actions_sha256": digest,
            "points": {"agentview": _cell(*on), "eye_in_hand": _cell(0.25, 0.5, 0.25)}}


def _write(folder: Path, episodes: list[dict], run: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (folder / "results.json").write_text(json.dumps({"run": run or {}}))


def _study_run(mod, seed: int, digests: list[str]) -> None:
    run = {"suite": "libero_object", "episodes_per_task": 1, "tasks": list(range(len(digests))), "max_steps": 9,
           "execute": 8, "settle_steps": 10, "weights_sha256": "w"}
    folder = mod.STUDY / f"{mod.VARIANT}_s{seed}"
    _write(folder, [_episode(t, d) for t, d in enumerate(digests)], run)
    (folder / "checkpoint").mkdir()


def test_replay_archives_only_the_study_episodes(still, monkeypatch, tmp_path) -> None:
    played = {"digests": ["a", "b"], "weights": "w"}

    def fake_evaluate(cfg, log=None):
        assert (cfg.episodes_per_task, cfg.tasks, cfg.max_steps, cfg.execute) == (1, (0, 1), 9, 8)
        _write(Path(cfg.out), [_episode(t, d) for t, d in enumerate(played["digests"])])
        return {"run": {"weights_sha256": played["weights"]}}

    monkeypatch.setattr(still, "evaluate", fake_evaluate)
    _study_run(still, 0, ["a", "b"])
    played["digests"] = ["a", "other"]
    with pytest.raises(SystemExit, match=r"seed 0: the replay did not play the study's episodes \(1 of 2 differ"):
        still.replay(0, tmp_path / "out", 1, 1)
    assert not (still.ARCHIVE / "s0").exists()
    played.update(digests=["a", "b"], weights="other")
    with pytest.raises(SystemExit, match="is not the policy the study evaluated"):
        still.replay(0, tmp_path / "out2", 1, 1)
    played["weights"] = "w"
    dest = still.replay(0, tmp_path / "out3", 1, 1)
    assert sorted(p.name for p in dest.iterdir()) == ["episodes.jsonl", "results.json"]
    played["digests"] = ["x", "y"]  # an archived seed is not replayed again
    assert still.replay(0, tmp_path / "out4", 1, 1) == dest


def test_table_pools_the_differences_over_seeds(still, tmp_path) -> None:
    folders = {}
    for seed, on in ((0, (0.5, 0.25, 0.25)), (1, (0.5, 0.25, 0.5))):
        folders[seed] = tmp_path / f"s{seed}"
        _write(folders[seed], [_episode(t, "d", on) for t in range(3)])
    md = still.table(folders, n_boot=200)
    assert "| agentview | s0 | 0.500 | 0.250 | 0.250 |" in md and "| agentview | s1 | 0.500 | 0.250 | 0.500 |" in md
    assert "| agentview | points - fixed grid | +0.250 [+0.250, +0.250] |" in md
    # held still: +0.25 on seed 0, 0 on seed 1: the pooled mean is their average, the interval spans the seeds
    assert "| agentview | points - held still | +0.125 [+0.000, +0.250] |" in md
    assert "| eye_in_hand | points - fixed grid | -0.250 [-0.250, -0.250] |" in md
    assert "Pooled over s0, s1" in md
