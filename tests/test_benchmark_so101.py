"""``benchmarks/libero/success.py --plan`` with ``"env": "so101"`` at a toy size: one policy on both tasks' demos,
trained one step, evaluated on one held-out in-distribution and one OOD scene per task, archived in the LIBERO
layout, resumed without redoing anything, rebuilt into the SO-101 report; the plan's errors; and the committed plan
against the commands documented for it (needs the ``so101`` extra)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from grids_vla.envs.so101.generate import generate  # noqa: E402
from grids_vla.envs.so101.scene import COLOURS, N_OOD  # noqa: E402
from grids_vla.experiments import evaluate_so101  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["pick_place_bowl", "stack"]


def _load(path: Path, name: str):
    if name not in sys.modules:  # registered first: results.py's dataclasses look their module up
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def _runner():
    return _load(ROOT / "benchmarks" / "libero" / "success.py", "success_so101_bench")


def _results():
    return _load(ROOT / "benchmarks" / "results.py", "results_rebuild")


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("so101demos") / "data"
    for task in TASKS:
        assert generate(task, 1, root, image_size=32, log=None)["demos"] == 1
    return root


def _plan(tmp_path: Path, demos: Path, **change) -> Path:
    plan = {
        "env": "so101",
        "tasks": TASKS,
        "data": str(demos),
        "archive": str(tmp_path / "archive" / "pick_place_bowl+stack"),
        "steps": 1,
        "batch_size": 2,
        "lr": 3e-4,
        "warmup_steps": 0,
        "episodes_per_task": 1,
        "ood_episodes_per_task": 1,
        "stages": [{"name": "core", "variants": ["grids-16", "dense"], "seeds": [0], "keep": True}],
        **change,
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _cells(md: str, *first: str) -> list[str]:
    """Cells of the first table row starting with the cells ``first``."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[: len(first)] == list(first):
            return cells
    raise AssertionError(f"no row {first}")


def test_so101_plan_trains_evaluates_archives_resumes_and_rebuilds(tmp_path, demos) -> None:
    bench = _runner()
    # the plan's own protocol fields: model fields on top of every preset, training options for every run
    protocol = {"model": {"vision_stem": "coordconv", "action_head": "l2"},
                "train": {"start_frames": 2, "start_weight": 3}}
    plan = _plan(tmp_path, demos, **protocol)
    archive = tmp_path / "archive" / "pick_place_bowl+stack"
    out = tmp_path / "out"
    common = ["--plan", str(plan), "--save-every", "1", "--num-workers", "0", "--max-steps", "4", "--threads", "1"]
    order = bench.jobs(argparse.Namespace(plan=bench.load_plan(str(plan)), stage=None))
    assert order == [("grids-16", 0, True, ("ood_scenes",)), ("dense", 0, True, ("ood_scenes",))]
    bench.main([*common, "--out", str(out)])

    for variant in ("grids-16", "dense"):
        run, kept = out / "runs" / f"{variant}_s0", archive / f"{variant}_s0"
        res = json.loads((run / "eval" / "results.json").read_text())
        assert res["complete"] and res["run"]["checkpoint"] == str(run / "final")
        assert res["run"]["suite"] == "so101 pick_place_bowl+stack" and res["run"]["task_names"] == TASKS
        assert res["overall"]["episodes"] == 2 and [t["episodes"] for t in res["tasks"].values()] == [1, 1]
        eps = _lines(run / "eval" / "episodes.jsonl")
        # task i of the plan is task_id i, the scene's index its init state: episodes pair like LIBERO's
        assert [(e["task_id"], e["task"], e["init_state"], e["scene"]) for e in eps] == [
            (i, t, 0, f"in/{evaluate_so101.IN_SEED_BASE}") for i, t in enumerate(TASKS)
        ]
        assert all((e["steps"] < 4) if e["success"] else (e["steps"] == 4) for e in eps)  # --max-steps 4
        n_reached = sum(e["reached"] for e in eps)
        assert res["progress"] == {"episodes": 2, "reached": n_reached, "lifted": sum(e["lifted"] for e in eps),
                                   "success": sum(e["success"] for e in eps)}
        assert "How far the episodes got" in (run / "eval" / "results.md").read_text()
        for e, task in zip(eps, TASKS):  # each task's own evaluation, merged unchanged
            (own,) = _lines(run / "eval" / task / "episodes.jsonl")
            assert own["actions_sha256"] == e["actions_sha256"] and own["task_id"] == task
        ood = json.loads((run / "ood" / "ood_scenes" / "results.json").read_text())
        assert ood["complete"] and ood["run"]["perturbation"] == "ood_scenes" and ood["overall"]["episodes"] == 2
        assert [e["scene"] for e in _lines(run / "ood" / "ood_scenes" / "episodes.jsonl")] == ["ood/0", "ood/0"]
        # archived in the LIBERO layout, the OOD evaluation beside, the kept float16 policy
        assert sorted(p.name for p in kept.iterdir()) == [
            "checkpoint",
            "data.json",
            "episodes.jsonl",
            "metrics.csv",
            "ood",
            "results.json",
            "results.md",
            "train_config.json",
        ]
        for name in ("results.json", "episodes.jsonl"):
            assert (kept / name).read_bytes() == (run / "eval" / name).read_bytes()
            assert (kept / "ood" / "ood_scenes" / name).read_bytes() == (run / "ood" / "ood_scenes" / name).read_bytes()
        assert (kept / "checkpoint" / "model.safetensors").read_bytes() == (
            run / "final" / "model.safetensors"
        ).read_bytes()
        data = json.loads((kept / "data.json").read_text())
        assert data["demos"] == 2 and data["actions_sha256"] == bench.data_fingerprint(str(demos))["actions_sha256"]
        settings = json.loads((kept / "train_config.json").read_text())
        model = settings["model"]
        asked = {evaluate_so101.scene_for(t, scenes, 0).instruction for t in TASKS for scenes in ("in", "ood")}
        assert model["action_dim"] == 4 and asked <= set(model["instructions"])
        assert {k: model[k] for k in protocol["model"]} == protocol["model"]
        assert {k: settings["train"][k] for k in protocol["train"]} == protocol["train"]

    # resumed: nothing retrained, no episode played again (a replay would measure new latencies)
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "success" not in p.name}
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.parent.name == "checkpoints"}
    bench.main([*common, "--out", str(out)])
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "success" not in p.name} == files
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.parent.name == "checkpoints"} == stamps
    report = json.loads((out / "success.json").read_text())
    assert report["variants"]["grids-16"]["episodes"] == 2 and set(report["paired_vs_dense"]) == {"grids-16"}
    # the run folders gone, the report comes from the archive alone (checked against the plan)
    shutil.rmtree(out)
    bench.main([*common, "--out", str(out)])
    assert not (out / "runs").exists()
    again = json.loads((out / "success.json").read_text())
    assert again["paired_vs_dense"] == report["paired_vs_dense"]
    assert again["variants"]["dense"]["seeds"]["0"]["source"] == str(archive / "dense_s0")
    # the archive is refused for a plan with another protocol
    other = tmp_path / "other.json"
    other.write_text(json.dumps(json.loads(plan.read_text()) | {"model": {"vision_stem": "coordconv"}}))
    with pytest.raises(SystemExit, match=r"does not match this comparison \(action_head: archived 'l2', asked 'l1'\)"):
        bench.main(["--plan", str(other), "--archive", str(archive), "--out", str(out), "--phase", "report"])

    # two evaluation processes play the same episodes as one
    args = argparse.Namespace(
        plan=bench.load_plan(str(plan)),
        data=str(demos),
        suite=bench.so101_suite(TASKS),
        episodes_per_task=1,
        ood_episodes_per_task=1,
        max_steps=4,
        eval_threads=1,
        eval_workers=2,
        video=0,
    )
    both = bench.eval_so101(args, archive / "grids-16_s0" / "checkpoint", tmp_path / "parallel", ood=True)
    ood = json.loads((archive / "grids-16_s0" / "ood" / "ood_scenes" / "results.json").read_text())
    assert both["run"]["workers"] == 2 and both["overall"] == ood["overall"]
    again = _lines(tmp_path / "parallel" / "episodes.jsonl")
    assert [e["actions_sha256"] for e in again] == [
        e["actions_sha256"] for e in _lines(archive / "grids-16_s0" / "ood" / "ood_scenes" / "episodes.jsonl")
    ]

    # the archive rebuilds into the SO-101 report's generated section
    results = _results()
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# by hand\n\n{results.SO101_BEGIN}\nSTALE\n{results.SO101_END}\n\nafter\n")
    text = results.rebuild_so101(plan, md, archive, n_boot=50)
    assert text.startswith("# by hand\n\n") and text.endswith(f"{results.SO101_END}\n\nafter\n") and "STALE" not in text
    for variant in ("dense", "grids-16"):
        for split, folder in (("in distribution", ""), ("out of distribution (`ood_scenes`)", "ood/ood_scenes/")):
            res = json.loads((archive / f"{variant}_s0" / f"{folder}results.json").read_text())["overall"]
            row = _cells(text, split, variant)
            assert row[2:4] == ["1/1", f"{res['successes']}/2 = {100 * res['successes'] / 2:.1f} %"]


def test_so101_plan_errors_name_the_field(tmp_path, demos, monkeypatch) -> None:
    bench = _runner()
    bad = {
        "env": ("mujoco", r"env: found 'mujoco', expected one of libero, so101"),
        "suite": ("libero_object", r"unknown fields \['suite'\] for env so101"),
        "tasks": (["pick_place_bowl", "pour"], r"tasks: found \['pick_place_bowl', 'pour'\], expected a list"),
        "ood_episodes_per_task": (
            N_OOD + 1,
            rf"ood_episodes_per_task: found {N_OOD + 1}, expected an int >= 1 and <= ",
        ),
        "stages": (
            [{"variants": ["dense"], "seeds": [0], "ood": ["lighting:0.8"]}],
            r"stage 0 \(unnamed\): found 'ood'",
        ),
        "model": ({"reducer": "dense"}, r"model: \['reducer'\] are set by the preset 'dense'"),
        "train": ({"lr": 0.1}, r"train: unknown or fixed fields \['lr'\]"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(SystemExit, match=message):
            bench.load_plan(str(_plan(tmp_path, demos, **{key: value})))
    for key, value, message in (("model", {"vision_stem": "hex"}, r"model: .*vision_stem"),
                                ("model", {"image_size": 64}, r"model: unknown or fixed fields \['image_size'\]"),
                                ("train", {"start_frames": 2}, r"train: --start-frames 2 and --start-weight 1 go"),
                                ("train", [1], r"train: found \[1\], expected an object")):
        with pytest.raises(SystemExit, match=message):
            bench.load_plan(str(_plan(tmp_path, demos, **{key: value})))
    plan = json.loads(_plan(tmp_path, demos).read_text())
    del plan["lr"], plan["tasks"]
    (tmp_path / "partial.json").write_text(json.dumps(plan))
    with pytest.raises(SystemExit, match=r"missing fields \['lr', 'tasks'\]; an so101 plan records its whole protocol"):
        bench.load_plan(str(tmp_path / "partial.json"))
    with pytest.raises(SystemExit, match=r"--tasks \[0\]: LIBERO task ids"):
        bench.main(["--plan", str(_plan(tmp_path, demos)), "--tasks", "0", "--phase", "report"])
    # the data must hold every task's demos and nothing else (the policy trains on all of it)
    only = tmp_path / "only"
    shutil.copytree(demos / "stack", only / "stack")
    with pytest.raises(SystemExit, match=r"no demos of pick_place_bowl \(expected .*pick_place_bowl/\*_demo.hdf5"):
        bench.so101_demos(str(only), tuple(TASKS))
    with pytest.raises(
        SystemExit, match=r"holds demos of \['stack'\].*expected only the plan's tasks \['pick_place_bowl'\]"
    ):
        bench.so101_demos(str(demos), ("pick_place_bowl",))
    # an in-distribution evaluation scene a demo played is refused
    args = argparse.Namespace(plan={"tasks": TASKS}, data=str(demos), episodes_per_task=3)
    bench._check_heldout(args)
    (played,) = bench.so101_demos(str(demos), tuple(TASKS))["seeds"]["stack"]
    monkeypatch.setattr(evaluate_so101, "IN_SEED_BASE", played - 2)
    with pytest.raises(SystemExit, match=rf"stack demos played the evaluation scene seed\(s\) \[{played}\]"):
        bench._check_heldout(args)


def test_committed_so101_plan_is_valid_and_documented() -> None:
    bench = _runner()
    path = ROOT / "benchmarks" / "so101" / "study.json"
    plan = bench.load_plan(str(path))
    order = bench.jobs(argparse.Namespace(plan=plan, stage=None))
    assert plan["env"] == "so101" and plan["archive"].startswith("benchmarks/so101/study/")
    assert {v for v, *_ in order} >= {"dense", "grids-16", "grids-16-l0"} and all(
        o == ("ood_scenes",) for *_, o in order
    )
    assert all(sorted({s for v, s, *_ in order if v == name}) == [0, 1, 2] for name in ("dense", "grids-16"))
    assert plan["ood_episodes_per_task"] == N_OOD  # the 21 OOD scenes, once each
    # the data commands documented beside the results make exactly the plan's data
    for doc in ("benchmarks/so101/RESULTS.md", "docs/so101.md"):
        text = (ROOT / doc).read_text()
        made = re.findall(r"grids-vla data so101 --task (\S+) --episodes (\d+) --seed (\d+) --out (\S+)", text)
        study = [m for m in made if m[3] == plan["data"]]
        # 200 demos per task, seed 0
        assert [m[0] for m in study] == plan["tasks"] and {m[1:3] for m in study} == {("200", "0")}, doc
        assert f"benchmarks/libero/success.py --plan {path.relative_to(ROOT)}" in text, doc
    # the docs' training command uses the plan's protocol (its model and train parts)
    docs = (ROOT / "docs/so101.md").read_text()
    train = re.search(r"grids-vla train --data runs/so101/data .*?(?=\n\.venv|\n```)", docs, re.S).group(0)
    for field, value in {**plan["model"], **plan["train"]}.items():
        assert f"--{field.replace('_', '-')} {value}" in train, (field, train)


def test_reach_probe_writes_its_numbers(tmp_path, demos, monkeypatch) -> None:
    """benchmarks/so101/reach_probe.py on a tiny untrained policy: both scene sets and the data check are reported;
    a horizon beyond the chunk is a one-line error."""
    from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

    probe = _load(ROOT / "benchmarks" / "so101" / "reach_probe.py", "reach_probe")
    cfg = GridSVLAConfig(image_size=32, patch_size=8, vision_dim=8, vision_depth=1, vision_heads=1, dim=8, depth=1,
                         heads=1, k=2, chunk=4, action_dim=4,
                         instructions=tuple(f"put the {c} cube in the bowl" for c in COLOURS))
    ckpt = GridSVLAPolicy(cfg).save_pretrained(tmp_path / "policy")
    out = tmp_path / "probe.json"
    assert probe.main(["--checkpoint", str(ckpt), "--scenes", "3", "--horizon", "4", "--data",
                       str(demos / "pick_place_bowl"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for scenes in ("demo_scenes", "held_out_scenes"):
        for view in (res[scenes], res[scenes]["blind"]):
            for axis in ("x", "y"):
                s = view[axis]
                assert (s["corr"] is None or -1 <= s["corr"] <= 1) and s["mean_abs_diff"] >= 0 \
                    and s["expert_std"] >= 0
        assert res[scenes]["y"]["expert_std"] > 0  # the scenes' cubes lie at different sides
    assert res["data"] == {"demos": 1}
    # later in the episode: the expert has moved, so its next moves differ from its first ones
    later = tmp_path / "later.json"
    assert probe.main(["--checkpoint", str(ckpt), "--scenes", "3", "--horizon", "4", "--after", "6",
                       "--out", str(later)]) == 0
    assert json.loads(later.read_text())["after"] == 6
    assert json.loads(later.read_text())["demo_scenes"]["x"] != res["demo_scenes"]["x"]
    with pytest.raises(SystemExit, match="--after: found -1, expected >= 0"):
        probe.main(["--checkpoint", str(ckpt), "--horizon", "4", "--after", "-1"])
    with pytest.raises(SystemExit, match="--horizon: found 5, expected 1 to the policy's chunk"):
        probe.main(["--checkpoint", str(ckpt), "--horizon", "5"])
    with pytest.raises(SystemExit, match="--checkpoint: .*nope"):
        probe.main(["--checkpoint", str(tmp_path / "nope")])
    # the data check finds the cube to move, the first colour the instruction names, whatever the colours' order
    from grids_vla.envs.so101.scene import sample_scene

    first, second = list(COLOURS)[-1], list(COLOURS)[0]
    assert probe.target_colour(f"stack the {first} cube on the {second} cube") == first
    assert probe.target_colour(sample_scene("stack", 3).instruction) == sample_scene("stack", 3).target.colour
    with pytest.raises(ValueError, match="names no cube colour"):
        probe.target_colour("stack the cubes")
    # demos whose instruction names no colour: a one-line exit naming --data and the demo
    def no_colour(text: str) -> str:
        raise ValueError(f"instruction {text!r} names no cube colour")

    monkeypatch.setattr(probe, "target_colour", no_colour)
    with pytest.raises(SystemExit, match=r"^--data .*_demo.hdf5 demo_0: instruction .* names no cube colour$"):
        probe.main(["--checkpoint", str(ckpt), "--scenes", "3", "--horizon", "4",
                    "--data", str(demos / "pick_place_bowl")])


def test_token_probe_recovers_a_linear_map_and_reports_three_probes(tmp_path) -> None:
    """benchmarks/so101/token_probe.py: its ridge recovers a noiseless linear map (R^2 ~ 1 held out) and scores
    pure noise near or below 0; end to end on a tiny untrained policy it writes the three probes; too few scenes
    is a one-line error."""
    import numpy as np

    from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

    tp = _load(ROOT / "benchmarks" / "so101" / "token_probe.py", "token_probe")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 40))
    y = x @ rng.normal(size=(40, 2)) + 3.0
    good = tp.probe(x[:80], y[:80], x[80:], y[80:])
    assert good["r2_x"] > 0.99 and good["r2_y"] > 0.99 and good["features"] == 40
    noise = tp.probe(x[:80], rng.normal(size=(80, 2)), x[80:], rng.normal(size=(40, 2)))
    assert noise["r2_x"] < 0.2 and noise["r2_y"] < 0.2
    # a point that sits still where the probe is fitted (rounding noise) and moves a hair (1e-5) where it is scored:
    # standardised, that hair would be 10^4 standard deviations and swamp the prediction
    parked = np.concatenate([x, 0.5 + rng.normal(scale=1e-9, size=(120, 1))], axis=1)
    parked[80:, -1] += 1e-5
    kept = tp.probe(parked[:80], y[:80], parked[80:], y[80:])
    assert kept["r2_x"] > 0.99 and kept["r2_y"] > 0.99
    cfg = GridSVLAConfig(image_size=32, patch_size=8, vision_dim=8, vision_depth=1, vision_heads=1, dim=8, depth=1,
                         heads=1, k=2, chunk=4, action_dim=4,
                         instructions=tuple(f"put the {c} cube in the bowl" for c in COLOURS))
    ckpt = GridSVLAPolicy(cfg).save_pretrained(tmp_path / "policy")
    out = tmp_path / "tp.json"
    assert tp.main(["--checkpoint", str(ckpt), "--fit", "10", "--held-out", "10", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["tokens"]["features"] == len(cfg.cameras) * cfg.k * cfg.dim
    assert res["front_pixels_32"]["features"] == 3 * 32 * 32
    assert set(res["tokens_untrained"]) == set(res["tokens"])
    assert res["points"]["features"] == len(cfg.cameras) * cfg.k * 2 and res["points_spread"] >= 0
    dense = GridSVLAPolicy(GridSVLAConfig(**{**cfg.to_dict(), "reducer": "dense"})).save_pretrained(tmp_path / "d")
    assert tp.main(["--checkpoint", str(dense), "--fit", "10", "--held-out", "10", "--out", str(out)]) == 0
    assert "points" not in json.loads(out.read_text())
    with pytest.raises(SystemExit, match="--fit: found 5, expected >= 10 scenes"):
        tp.main(["--checkpoint", str(ckpt), "--fit", "5"])


def test_locate_writes_a_curve_per_stem(tmp_path) -> None:
    """benchmarks/so101/locate.py on tiny settings: one held-out R^2 curve per stem, scored every --every steps and
    at the end; an unknown stem or too few scenes is a one-line error."""
    loc = _load(ROOT / "benchmarks" / "so101" / "locate.py", "locate")
    out = tmp_path / "locate.json"
    assert loc.main(["--stems", "patch", "coordconv", "--fit", "12", "--held-out", "10", "--steps", "3",
                     "--every", "2", "--batch-size", "4", "--image-size", "32", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["curves"]) == {"patch", "coordconv"}
    for curve in res["curves"].values():
        assert [c["step"] for c in curve] == [2, 3]
        assert all(c["r2_x"] <= 1 and c["r2_y"] <= 1 and c["train_loss"] >= 0 for c in curve)
    with pytest.raises(SystemExit, match=r"--stems: found \['resnet'\]"):
        loc.main(["--stems", "resnet"])
    with pytest.raises(SystemExit, match="--held-out: found 3, expected >= 10"):
        loc.main(["--held-out", "3"])


def test_first_moves_cuts_demos_and_fits_a_policy_on_them(tmp_path, demos) -> None:
    """benchmarks/so101/first_moves.py: ``cut`` keeps each demo's first frames and nothing else changes; ``fit``
    reports per step the policy's first moves against the demos'; bad input is a one-line error."""
    import h5py
    import numpy as np

    from grids_vla.envs.libero.dataset import find_demo_files, read_demo
    from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

    tool = _load(ROOT / "benchmarks" / "so101" / "first_moves.py", "first_moves")
    assert tool.main(["cut", "--data", str(demos), "--frames", "5", "--out", str(tmp_path / "cut")]) == 0
    before, after = find_demo_files(demos), find_demo_files(tmp_path / "cut")
    assert [p.name for p in after] == [p.name for p in before]
    for a, b in zip(before, after):
        full, short = read_demo(a, 0), read_demo(b, 0)
        assert short["actions"].shape[0] == 5 and short["instruction"] == full["instruction"]
        np.testing.assert_array_equal(short["agentview_rgb"], full["agentview_rgb"][:5])
        np.testing.assert_array_equal(short["actions"], full["actions"][:5])
        with h5py.File(b) as f:
            assert f["data/demo_0"].attrs["num_samples"] == 5

    cfg = GridSVLAConfig(image_size=32, patch_size=8, vision_dim=8, vision_depth=1, vision_heads=1, dim=8, depth=1,
                         heads=1, k=2, chunk=4, action_dim=4,
                         instructions=tuple(f"put the {c} cube in the bowl" for c in COLOURS)
                         + tuple(f"stack the {c} cube on the {d} cube" for c in COLOURS for d in COLOURS if c != d))
    ckpt = GridSVLAPolicy(cfg).save_pretrained(tmp_path / "policy")
    with pytest.raises(SystemExit, match="--steps: only 2 demos reach step 0, expected >= 3"):
        tool.main(["fit", "--checkpoint", str(ckpt), "--data", str(tmp_path / "cut"), "--steps", "0"])
    shutil.copy(after[0], after[0].with_name("copy_" + after[0].name))  # a third demo reaching each step
    out = tmp_path / "fit.json"
    assert tool.main(["fit", "--checkpoint", str(ckpt), "--data", str(tmp_path / "cut"), "--steps", "0", "4",
                      "--out", str(out)]) == 0
    res = json.loads(out.read_text())["steps"]
    assert set(res) == {"0", "4"} and res["0"]["demos"] == 3
    assert res["0"]["y"]["demo_std"] > 0 and res["0"]["y"]["policy_std"] >= 0
    with pytest.raises(SystemExit, match="does not exist"):
        tool.main(["cut", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="--frames: found 0, expected >= 1"):
        tool.main(["cut", "--data", str(demos), "--frames", "0", "--out", str(tmp_path / "x")])
