"""The README's main job, ``grids-vla demo``, end to end at a tiny size (needs the libero, train and video extras).

Skipped when LIBERO is not installed (a skip fails the suite under ``GRIDS_NO_SKIP=1``, as in CI).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("libero.libero", reason="LIBERO extra not installed: pip install 'grids-vla[libero]'")

from grids_vla.cli import main  # noqa: E402
from grids_vla.demo import QUICK, DemoConfig, default_cache  # noqa: E402
from grids_vla.policy import GridSVLAPolicy  # noqa: E402


def _call_flops(policy: GridSVLAPolicy) -> float:
    """FLOPs of one batch-1 policy call, counted by torch's own FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    c = policy.config
    batch = {cam: torch.zeros(1, 3, c.image_size, c.image_size, dtype=torch.uint8) for cam in c.cameras}
    batch["state"], batch["instruction"] = torch.zeros(1, c.state_dim), [c.instructions[0]]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        policy.predict_action(batch)
    return counter.get_total_flops()


def test_demo_generates_trains_evaluates_and_reports(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--out", str(out), "--image-size", "64", "--demos-per-task", "1", "--steps", "8",
            "--batch-size", "4", "--max-steps", "12", "--workers", "1", "--threads", "1"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["tasks"] == [0] and res["config"]["image_size"] == 64  # --quick, then explicit flags win
    models = res["models"]
    assert list(models) == ["grids-16", "dense"]
    report = (out / "report.md").read_text()
    for label, r in models.items():  # each summary is its own run's training log, evaluation and FLOP count
        ev = json.loads((out / label / "eval" / "results.json").read_text())
        eps = [json.loads(line) for line in (out / label / "eval" / "episodes.jsonl").read_text().splitlines()]
        assert r["episodes"] == ev["overall"]["episodes"] == len(eps) == 1
        assert r["successes"] == ev["overall"]["successes"] == sum(e["success"] for e in eps)
        assert r["latency_ms"] == ev["latency_ms"]["median"] == statistics.median(eps[0]["latencies_ms"])
        assert ev["run"]["max_steps"] == r["max_steps"] == 12 and ev["run"]["tasks"] == [0]
        with open(out / label / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(row["step"]) for row in rows] == list(range(1, 9)) and f"{r['final_loss']:.6f}" == rows[-1]["loss"]
        policy = GridSVLAPolicy.from_pretrained(r["checkpoint"]).eval()
        assert Path(r["checkpoint"]).parent.parent == out / label and policy.config.reducer == r["reducer"]
        assert r["gflops_per_call"] == pytest.approx(_call_flops(policy) / 1e9, rel=1e-9)
        tokens = {"grids-16": 32, "dense": 128}[label]  # 2 cameras x (16 points or 8 x 8 patches)
        lo, hi = r["ci95"]
        assert policy.config.visual_tokens == tokens and ev["overall"]["ci95"] == [lo, hi]
        # 8 steps, the first 5 not timed: samples/s over the last 2 intervals of the logged elapsed time
        speed = 2 * 4 / max(float(rows[-1]["elapsed_s"]) - float(rows[5]["elapsed_s"]), 1e-9)
        assert r["train_samples_per_s"] == pytest.approx(speed, rel=1e-9)
        assert f"| {label} | {tokens} | {r['successes']}/1 | {100 * lo:.0f}-{100 * hi:.0f} % | " \
               f"{r['final_loss']:.3f} | {speed:.1f} | " in report
        assert f" | {r['latency_ms']:.2f} | " in report and f" | {r['gflops_per_call']:.3f} | " in report
    assert models["dense"]["gflops_per_call"] > models["grids-16"]["gflops_per_call"]  # 128 vs 32 visual tokens
    assert (tmp_path / "xdg" / "grids-vla" / "libero" / "libero_object").is_dir()  # demos went to the cache
    assert "Small scale" in report
    # where GridS looked, from its evaluation's points summary (dense has none)
    pts = models["grids-16"]["points"]
    assert pts == json.loads((out / "grids-16" / "eval" / "results.json").read_text())["points"]
    assert models["dense"]["points"] is None and "grids-16: Where the points looked" in report
    assert f"| agentview | {pts['agentview']['frames']} | " in report
    assert (out / "grids-16" / "eval" / "videos" / "task00_ep000.mp4").stat().st_size > 0
    assert not (out / "dense" / "eval" / "videos").exists()
    # a second run reuses the cached demos: nothing is generated again
    assert main(args) == 0
    summary = json.loads((tmp_path / "xdg" / "grids-vla" / "libero" / "libero_object" / "summary.json").read_text())
    assert summary["new_demos"] == 0


def test_demo_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="steps"):
        DemoConfig(steps=0)
    with pytest.raises(ValueError, match="unique"):
        DemoConfig(tasks=(0, 0))
    with pytest.raises(SystemExit, match="episodes_per_task"):
        main(["demo", "--episodes-per-task", "0"])
    assert QUICK["steps"] < DemoConfig().steps and default_cache().endswith(os.path.join("grids-vla", "libero"))
