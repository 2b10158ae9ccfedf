"""The command line and the synthetic toy run, end to end on a tiny budget."""

import json

import pytest
import torch

from grids_vla.cli import main
from grids_vla.toy import make_batch


def test_reducers_command_lists_grids(capsys):
    assert main(["reducers"]) == 0
    assert "grids" in capsys.readouterr().out


def test_toy_runs_and_writes_a_report(tmp_path):
    out = tmp_path / "toy"
    code = main(["toy", "--out", str(out), "--steps", "3", "--batch-size", "8", "--eval-size", "32",
                 "--reducers", "dense", "grids", "--threads", "1"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["reducer"] for r in results] == ["dense", "grids"]
    assert results[0]["tokens"] == 256 and results[1]["tokens"] == 4
    assert all(0.0 <= r["success"] <= 1.0 for r in results)
    assert "| grids | 4 |" in (out / "report.md").read_text()
    assert (out / "points.png").stat().st_size > 0


def test_toy_rejects_bad_k(tmp_path):
    with pytest.raises(SystemExit, match="--k and --steps must be >= 1"):
        main(["toy", "--out", str(tmp_path), "--k", "0"])


def test_toy_scenes_put_the_target_colour_at_the_target():
    images, colour, centre = make_batch(16, 4, torch.Generator().manual_seed(0))
    from grids_vla.toy import PALETTE

    px = (centre * 64).long()
    for i in range(16):
        assert torch.allclose(images[i, :, px[i, 1], px[i, 0]], PALETTE[colour[i]])
