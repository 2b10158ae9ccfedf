"""The README's main job, ``grids-vla demo``, end to end at a tiny size (needs the libero, train and video extras).

Skipped when LIBERO is not installed (a skip fails the suite under ``GRIDS_NO_SKIP=1``, as in CI).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("libero.libero", reason="LIBERO extra not installed: pip install 'grids-vla[libero]'")

from grids_vla.cli import main  # noqa: E402
from grids_vla.demo import QUICK, DemoConfig, default_cache  # noqa: E402
from grids_vla.policy import GridSVLAPolicy  # noqa: E402


def _call_flops(policy: GridSVLAPolicy) -> float:
    """FLOPs of one batch-1 policy call, counted by torch's own FlopCounterMode with math attention (whose matmuls
    it sees; the fused CPU kernel hides them, so that count must be lower)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    c = policy.config
    batch = {cam: torch.zeros(1, 3, c.image_size, c.image_size, dtype=torch.uint8) for cam in c.cameras}
    batch["state"], batch["instruction"] = torch.zeros(1, c.state_dim), [c.instructions[0]]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        policy.predict_action(batch)
    with torch.no_grad(), FlopCounterMode(display=False) as fused:  # the default kernel hides attention on CPU
        policy.predict_action(batch)
    assert counter.get_total_flops() > fused.get_total_flops() or torch.cuda.is_available()
    return counter.get_total_flops()


def test_demo_generates_trains_evaluates_and_reports(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    out, refs = tmp_path / "demo", tmp_path / "refs"
    args = ["demo", "--quick", "--out", str(out), "--image-size", "64", "--demos-per-task", "1", "--steps", "8",
            "--batch-size", "4", "--max-steps", "12", "--workers", "1", "--threads", "1", "--dense-timing-steps", "8",
            "--references", str(refs)]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["tasks"] == [0] and res["config"]["image_size"] == 64  # --quick, then explicit flags win
    models = res["models"]
    assert list(models) == ["grids-16-l0", "dense"]
    report = (out / "report.md").read_text()
    for label, r in models.items():  # each speed row is its own run's training log and FLOP count
        with open(out / label / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(row["step"]) for row in rows] == list(range(1, 9)) and f"{r['final_loss']:.6f}" == rows[-1]["loss"]
        policy = GridSVLAPolicy.from_pretrained(r["checkpoint"]).eval()
        assert Path(r["checkpoint"]).parent.parent == out / label and policy.config.reducer == r["reducer"]
        assert r["gflops_per_call"] == pytest.approx(_call_flops(policy) / 1e9, rel=1e-9)
        assert policy.config.visual_tokens == r["visual_tokens"] == {"grids-16-l0": 32, "dense": 128}[label]
        # 8 steps, the first 5 not timed: samples/s over the last 2 intervals of the logged elapsed time
        speed = 2 * 4 / max(float(rows[-1]["elapsed_s"]) - float(rows[5]["elapsed_s"]), 1e-9)
        assert r["train_samples_per_s"] == pytest.approx(speed, rel=1e-9) and r["latency_ms"] > 0
        assert f"| {label} | {r['visual_tokens']} | {speed:.1f} | " in report
        assert f" | {r['latency_ms']:.2f} | " in report and f" | {r['gflops_per_call']:.3f} | " in report
    assert models["dense"]["gflops_per_call"] > models["grids-16-l0"]["gflops_per_call"]  # 128 vs 32 visual tokens
    assert policy.config.after_layer is None and GridSVLAPolicy.from_pretrained(
        models["grids-16-l0"]["checkpoint"]).config.after_layer == 0
    # only the trained policy is evaluated when no benchmark checkpoint is there; the report says why
    assert list(res["success"]) == ["grids-16-l0"] and "dense_s0 (no committed checkpoint at" in report
    r = res["success"]["grids-16-l0"]
    ev = json.loads((out / "eval" / "grids-16-l0" / "results.json").read_text())
    eps = [json.loads(line) for line in (out / "eval" / "grids-16-l0" / "episodes.jsonl").read_text().splitlines()]
    assert r["episodes"] == ev["overall"]["episodes"] == len(eps) == 1 and ev["run"]["tasks"] == [0]
    assert r["successes"] == sum(e["success"] for e in eps) and ev["run"]["max_steps"] == r["max_steps"] == 12
    lo, hi = r["ci95"]
    assert f"| grids-16-l0 | here: 8 steps x batch 4 on this demo's demos | 32 | {r['successes']}/1 | " \
           f"{100 * lo:.0f}-{100 * hi:.0f} % |" in report
    assert (tmp_path / "xdg" / "grids-vla" / "libero" / "libero_object").is_dir()  # demos went to the cache
    assert "Small scale" in report
    # where GridS looked, from its evaluation's points summary
    assert r["points"] == ev["points"] and "grids-16-l0: Where the points looked" in report
    assert f"| agentview | {r['points']['agentview']['frames']} | " in report
    assert (out / "eval" / "grids-16-l0" / "videos" / "task00_ep000.mp4").stat().st_size > 0

    # committed benchmark checkpoints are evaluated on the same episodes and labelled; one at another size is not
    ref = refs / "dense_s0"
    (ref / "checkpoint").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (ref / "checkpoint" / name).write_bytes((Path(models["dense"]["checkpoint"]) / name).read_bytes())
    (ref / "train_config.json").write_text((out / "dense" / "train_config.json").read_text())
    (ref / "data.json").write_text(json.dumps({"demos": 200}))
    from grids_vla.policy import GridSVLAConfig
    GridSVLAPolicy(GridSVLAConfig.preset("grids-16", instructions=("a",))).save_pretrained(
        refs / "grids-16_s0" / "checkpoint")
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert list(res["success"]) == ["grids-16-l0", "dense_s0"]
    d = res["success"]["dense_s0"]
    ev = json.loads((out / "eval" / "dense_s0" / "results.json").read_text())
    assert ev["run"]["checkpoint"] == str(ref / "checkpoint") and d["successes"] == ev["overall"]["successes"]
    assert f"| dense_s0 | benchmark checkpoint: 8 steps x batch 4 on 200 demos of every libero_object task, seed 0 " \
           f"(`{ref.as_posix()}`) | 128 | {d['successes']}/1 |" in report
    assert "grids-16_s0 (trained at 128 px, the demo runs at 64 px)" in report
    assert not (out / "eval" / "dense_s0" / "videos").exists()
    # the second run reused the cached demos: nothing was generated again
    summary = json.loads((tmp_path / "xdg" / "grids-vla" / "libero" / "libero_object" / "summary.json").read_text())
    assert summary["new_demos"] == 0


def test_demo_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="steps"):
        DemoConfig(steps=0)
    with pytest.raises(ValueError, match="unique"):
        DemoConfig(tasks=(0, 0))
    with pytest.raises(SystemExit, match="episodes_per_task"):
        main(["demo", "--episodes-per-task", "0"])
    with pytest.raises(ValueError, match="variant must be a GridS-like preset"):
        DemoConfig(variant="dense")
    with pytest.raises(ValueError, match=r"demo_tasks \[0\] must include every evaluated task \[0, 1\]"):
        DemoConfig(tasks=(0, 1), demo_tasks=(0,))
    with pytest.raises(ValueError, match="demo_tasks must be unique"):
        DemoConfig(demo_tasks=(0, 1, 1))
    assert DemoConfig(tasks=(1,), demo_tasks=(1, 0)).demo_tasks == (1, 0) and DemoConfig().demo_tasks == ()
    assert QUICK["steps"] < DemoConfig().steps and default_cache().endswith(os.path.join("grids-vla", "libero"))
