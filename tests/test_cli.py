"""The command line and the synthetic toy run, end to end on a tiny budget."""

import json

import pytest
import torch

from grids_vla.cli import main
from grids_vla.reducers import get_reducer_class, list_reducers
from grids_vla.toy import make_batch


def test_reducers_command_lists_every_registered_reducer(capsys):
    assert main(["reducers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = list_reducers()
    assert {"grids", "dense", "tokenlearner"} <= set(names)
    assert [line.split()[0] for line in lines] == names  # one line each, in order, first word the name
    grids = lines[names.index("grids")].split(maxsplit=1)[1]
    assert grids == get_reducer_class("grids").__doc__.strip().splitlines()[0]  # with its docstring summary


def test_toy_runs_and_writes_a_report(tmp_path):
    out = tmp_path / "toy"
    code = main(["toy", "--out", str(out), "--steps", "3", "--batch-size", "8", "--eval-size", "32",
                 "--reducers", "dense", "grids", "--threads", "1"])
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    results = saved["results"]
    assert saved["config"]["eval_size"] == 32 and saved["config"]["k"] == 4
    assert [r["reducer"] for r in results] == ["dense", "grids"]
    assert results[0]["tokens"] == 256 and results[1]["tokens"] == 4
    report = (out / "report.md").read_text()
    for r in results:
        hits = r["success"] * 32  # a share of the 32 evaluation scenes
        assert hits == round(hits)
        row = f"| {r['reducer']} | {r['tokens']} | {r['success']:.1%} | {r['mean_error']:.3f} | " \
              f"{r['train_samples_per_s']:.0f} | {r['latency_ms_batch1']:.2f} |"
        assert row in report
    assert (out / "points.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![sampling points](points.png)" in report


def test_toy_rejects_bad_k(tmp_path):
    with pytest.raises(SystemExit, match="--k and --steps must be >= 1"):
        main(["toy", "--out", str(tmp_path), "--k", "0"])


def test_toy_scenes_put_the_target_colour_at_the_target():
    images, colour, centre = make_batch(16, 4, torch.Generator().manual_seed(0))
    from grids_vla.toy import PALETTE

    px = (centre * 64).long()
    for i in range(16):
        assert torch.allclose(images[i, :, px[i, 1], px[i, 0]], PALETTE[colour[i]])
