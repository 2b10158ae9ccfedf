"""The committed LIBERO benchmark tables are what their scripts make of the committed raw files.

``benchmarks/libero/success/success.md`` is rebuilt byte for byte (and ``success.json`` field for field) by running
``success.py --phase report`` on the archived runs next to it. ``throughput.py`` and ``pipeline.py`` time models while
they write their tables, so their tables are checked field for field against their JSON with the formulas the scripts
use. Needs no simulator: the report phase only reads files.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import re
import statistics
from pathlib import Path

import pytest
import torch

from grids_vla.policy.configuration_grids_vla import GridSVLAConfig
from grids_vla.policy.modeling_grids_vla import GridSVLAPolicy

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "libero"
ARCHIVE = BENCH / "success"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_tables", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(md: str) -> dict[str, list[str]]:
    """Cells of a markdown table's body rows, by their first cell (the variant)."""
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith(("| variant", "|---")):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows


def _argv(args: dict, **override: object) -> list[str]:
    """A command line that parses back to ``args`` (an argparse namespace dumped to JSON), with ``override``."""
    argv = []
    for key, value in {**args, **override}.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        argv += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return argv


def test_success_report_rebuilds_from_the_archived_runs(tmp_path, monkeypatch) -> None:
    md = (ARCHIVE / "success.md").read_text()
    committed = json.loads((ARCHIVE / "success.json").read_text())
    # what the report takes from the machine it ran on, as the committed header states it
    found = re.search(r"; (\S+) CPU \((\d+) cores\), (\d{4}-\d{2}-\d{2})\.$", md.splitlines()[2])
    assert found, md.splitlines()[2]
    machine, cores, day = found[1], int(found[2]), datetime.date.fromisoformat(found[3])

    class _Day(datetime.date):
        @classmethod
        def today(cls) -> datetime.date:
            return day

    bench = _load("success")
    monkeypatch.setattr(bench.platform, "machine", lambda: machine)
    monkeypatch.setattr(bench.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(bench, "date", _Day)
    monkeypatch.chdir(tmp_path)  # the recorded --data path does not exist here: no data fingerprint to compare
    assert committed["args"]["phase"] == "report"
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:
        bench.main(_argv(committed["args"], out=out, archive=ARCHIVE))
    finally:
        torch.set_num_threads(threads)  # main() pins the process's torch threads

    assert (out / "success.md").read_bytes() == (ARCHIVE / "success.md").read_bytes()
    rebuilt = json.loads((out / "success.json").read_text())
    assert rebuilt["paired_vs_dense"] == committed["paired_vs_dense"]
    # options added to success.py since (the study's --plan, OOD and checkpoint options) keep their defaults here
    new = {"plan": None, "stage": None, "keep_checkpoints": False, "liberoplus_python": ".venv-liberoplus/bin/python",
           "ood_episodes_per_task": 5, "ood_plus_per_task": 5, "device": "auto"}
    assert {k: v for k, v in rebuilt["args"].items() if k not in ("out", "archive")} == \
        {**new, **{k: v for k, v in committed["args"].items() if k not in ("out", "archive")}}
    assert rebuilt["variants"].keys() == committed["variants"].keys() == {"dense", "grids-16"}
    for variant, row in committed["variants"].items():
        again = rebuilt["variants"][variant]
        assert {k: v for k, v in again.items() if k != "seeds"} == {k: v for k, v in row.items() if k != "seeds"}
        assert again["seeds"].keys() == row["seeds"].keys()
        for seed, run in row["seeds"].items():
            # the committed report read the run folders; the rebuilt one reads their archived copies
            assert again["seeds"][seed].pop("source") == str(ARCHIVE / f"{variant}_s{seed}")
            assert again["seeds"][seed] == {k: v for k, v in run.items() if k != "source"}, (variant, seed)
    # and the pooled numbers are the archived per-run evaluations, added up
    for variant, row in rebuilt["variants"].items():
        runs = [json.loads((ARCHIVE / f"{variant}_s{s}" / "results.json").read_text())["overall"] for s in row["seeds"]]
        assert row["successes"] == sum(r["successes"] for r in runs)
        assert row["episodes"] == sum(r["episodes"] for r in runs)


@pytest.mark.parametrize("folder", sorted(p.parent for p in BENCH.glob("**/throughput.json")),
                         ids=lambda p: p.name)
def test_throughput_table_is_its_json(folder: Path) -> None:
    raw = json.loads((folder / "throughput.json").read_text())
    args, md = raw["args"], (folder / "throughput.md").read_text()
    assert md.startswith(f"batch {args['batch_size']} training / batch 1 inference, {args['threads']} threads, seed "
                         f"{args['seed']}, {args['rounds']} rounds after {args['warmup']} warm-up, ")
    variants = args["variants"]
    rows = _rows(md)
    assert list(rows) == variants
    med = {}
    for v in variants:
        assert len(raw["train_ms"][v]) == len(raw["infer_ms"][v]) == args["rounds"]
        med[v] = statistics.median(raw["train_ms"][v]), statistics.median(raw["infer_ms"][v])
    dense = "dense" if "dense" in variants else variants[0]
    for v in variants:
        cfg = GridSVLAConfig.preset(v, instructions=("pick up the bowl",))
        params = sum(p.numel() for p in GridSVLAPolicy(cfg).parameters())
        t, i = med[v]
        assert rows[v] == [str(cfg.visual_tokens), f"{params / 1e6:.2f} M", f"{t:.1f}",
                           f"{args['batch_size'] / t * 1000:.1f}", f"{med[dense][0] / t:.2f}x", f"{i:.2f}",
                           f"{med[dense][1] / i:.2f}x"], v


@pytest.mark.parametrize("folder", sorted(p.parent for p in BENCH.glob("*/pipeline.json")), ids=lambda p: p.name)
def test_pipeline_table_is_its_json(folder: Path) -> None:
    raw = json.loads((folder / "pipeline.json").read_text())
    args, md = raw["args"], (folder / "pipeline.md").read_text()
    header = md.splitlines()[0]
    assert header.startswith(f"`grids-vla train` pipeline, batch {args['batch_size']}, {args['num_workers']} loader "
                             f"process(es), {args['threads']} threads, seed {args['seed']}, {args['rounds']} rounds x "
                             f"{args['steps']} steps (first {args['skip']} of each not timed), ")
    assert header.endswith(f"; data `{args['data']}`")
    variants = args["variants"]
    rows = _rows(md)
    assert list(rows) == variants
    timed = args["steps"] - args["skip"] - 1  # step times per run: differences of the logged elapsed times
    med = {}
    for v in variants:
        steps, per_round = raw["step_s"][v], raw["round_samples_per_s"][v]
        assert len(steps) == args["rounds"] * timed and len(per_round) == args["rounds"]
        for r, speed in enumerate(per_round):  # each round's speed is its own steps' (rounds in order)
            secs = steps[r * timed:(r + 1) * timed]
            assert speed == pytest.approx(args["batch_size"] * len(secs) / sum(secs), rel=1e-12), (v, r)
        med[v] = statistics.median(steps)
    dense = "dense" if "dense" in variants else variants[0]
    for v in variants:
        assert rows[v] == [f"{1000 * med[v]:.1f}", f"{args['batch_size'] / med[v]:.1f}",
                           ", ".join(f"{x:.1f}" for x in raw["round_samples_per_s"][v]),
                           f"{med[dense] / med[v]:.2f}x"], v
