"""benchmarks/points/token_norms.py: where a checkpoint's points sit relative to the encoder's high-norm tokens."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "points" / "token_norms.py"


def _load():
    spec = importlib.util.spec_from_file_location("points_token_norms_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_points_on_the_high_norm_cell_and_off_it() -> None:
    tn = _load()
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 1, 16, 8, generator=g)  # 3 frames, 1 camera, a 4 x 4 grid
    feats[:, 0, 1 * 4 + 2] *= 10.0  # row 1, column 2 stands out in every frame
    feats[:, 0, 3 * 4 + 0] *= 0.01  # row 3, column 0 is the quietest
    on = torch.tensor([2 / 3, 1 / 3]).expand(3, 1, 2, 2)  # (x, y) of that cell's centre (align_corners)
    off = torch.tensor([0.0, 1.0]).expand(3, 1, 2, 2)
    rep = tn.norm_report(feats, on, (4, 4), ("front",))["front"]
    assert rep["frames"] == 3 and rep["top_cells"][0][:2] == [1, 2]
    assert rep["points_on_top"] == 1.0 and rep["points_mean_z"] > 2.0
    rep = tn.norm_report(feats, off, (4, 4), ("front",))["front"]
    assert rep["points_on_top"] == 0.0 and rep["points_mean_z"] < 0.0
    assert "points_on_top" not in tn.norm_report(feats, None, (4, 4), ("front",))["front"]  # dense: no points


@pytest.mark.parametrize("predictor,features", [("pooled", "map"), ("attention", "map"), ("attention", "stem")])
def test_measure_reads_the_policy_and_leaves_it_as_it_was(predictor: str, features: str) -> None:
    tn = _load()
    torch.manual_seed(0)
    cfg = GridSVLAConfig(image_size=32, patch_size=8, vision_dim=16, vision_depth=1, vision_heads=2, dim=16, depth=1,
                         heads=2, mlp_ratio=2.0, k=4, chunk=2, instructions=("go",), predictor=predictor,
                         point_features=features)
    policy = GridSVLAPolicy(cfg).eval()
    batch = {cam: torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8) for cam in cfg.cameras}
    batch.update(state=torch.zeros(2, 8), instruction=["go", "go"])
    rep = tn.measure(policy, batch)
    assert set(rep) == set(cfg.cameras)
    assert all(0.0 <= r["points_on_top"] <= 1.0 and len(r["top_cells"]) == 8 for r in rep.values())
    for r in rep.values():  # the attention head's maps start spread (zero queries: the anchor prior alone)
        assert ("attention_entropy" in r) == (predictor == "attention")
        if predictor == "attention":
            assert 0.0 < r["attention_entropy"] < r["uniform_entropy"] and 1 / 16 < r["attention_peak"] < 1.0
    assert "_reduce" not in vars(policy)  # the spy is gone: the class's method again


def test_attention_report_tells_a_sharp_map_from_a_spread_one() -> None:
    tn = _load()
    spread = tn.attention_report(torch.full((2, 3, 16), 1 / 16))
    assert spread["attention_entropy"] == spread["uniform_entropy"] == round(float(torch.tensor(16.0).log()), 4)
    assert spread["attention_peak"] == 0.0625
    sharp = tn.attention_report(torch.nn.functional.one_hot(torch.zeros(2, 3, dtype=torch.long), 16).float())
    assert sharp["attention_entropy"] == 0.0 and sharp["attention_peak"] == 1.0


def test_a_bad_checkpoint_is_one_line_naming_the_flag(tmp_path) -> None:
    tn = _load()
    with pytest.raises(SystemExit) as exc:
        tn.main(["--checkpoint", str(tmp_path / "none"), "--data", str(tmp_path)])
    assert str(exc.value).startswith("--checkpoint: ") and "\n" not in str(exc.value)
    with pytest.raises(SystemExit, match=r"^--top: found 1.5"):
        tn.main(["--checkpoint", "x", "--data", "y", "--top", "1.5"])


def test_the_script_measures_demo_frames_end_to_end(tmp_path) -> None:
    """main() on two synthetic LIBERO-layout task files and a tiny attention-head checkpoint: the frames it asked for,
    every camera reported, the report written; frames that no demo has are a one-line --data error."""
    import json

    import numpy as np

    from test_policy import INSTRUCTIONS, _write_task, tiny

    tn = _load()
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i, instruction in enumerate(INSTRUCTIONS):
        _write_task(data / f"task{i}_demo.hdf5", instruction, demos=2, steps=6, rng=rng)
    torch.manual_seed(0)
    ckpt = GridSVLAPolicy(tiny(predictor="attention")).save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "report" / "norms.json"
    assert tn.main(["--checkpoint", str(ckpt), "--data", str(data), "--demos", "1", "--times", "0", "3",
                    "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert set(rep["cameras"]) == {"agentview", "eye_in_hand"}
    assert all(r["frames"] == 4 for r in rep["cameras"].values())  # 2 files x 1 demo x 2 frames
    assert all(0.0 <= r["points_on_top"] <= 1.0 for r in rep["cameras"].values())
    with pytest.raises(SystemExit, match=r"^--data .*: no frame \[99\] in the first 1 demos"):
        tn.main(["--checkpoint", str(ckpt), "--data", str(data), "--demos", "1", "--times", "99"])
