"""``benchmarks/libero/success.py`` end to end at a toy size (train two variants, evaluate, resume, archive, report),
``benchmarks/libero/pipeline.py`` (training throughput through the real loop) and ``throughput.py`` (model step)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("libero.libero", reason="LIBERO extra not installed: pip install 'grids-vla[libero]'")

from grids_vla.envs.libero.data import generate  # noqa: E402
from grids_vla.policy.evaluation import mcnemar_exact, wilson_interval  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "libero"


def _load(name: str = "success"):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demos")
    generate("libero_object", 1, root, image_size=32, seed=0, tasks=[0], max_attempts=3)
    return root / "libero_object"


def test_success_benchmark_trains_evaluates_resumes_and_reports(tmp_path, demos) -> None:
    bench = _load()
    args = ["--data", str(demos), "--tasks", "0", "--seeds", "0", "--steps", "2",
            "--batch-size", "2", "--warmup-steps", "0", "--save-every", "1", "--num-workers", "0",
            "--episodes-per-task", "1", "--max-steps", "4", "--threads", "1", "--device", "cpu",
            "--out", str(tmp_path / "out")]
    bench.main(args)
    trained = json.loads((tmp_path / "out" / "runs" / "dense_s0" / "train_config.json").read_text())["train"]
    assert trained["device"] == "cpu"  # --device reaches training (and is recorded as the device it ran on)
    res = json.loads((tmp_path / "out" / "success.json").read_text())["variants"]
    assert set(res) == {"dense", "grids-16"}
    won = {}
    for v, r in res.items():  # the table is the evaluation's episodes, counted
        (ep,) = [json.loads(line) for line in
                 (tmp_path / "out" / "runs" / f"{v}_s0" / "eval" / "episodes.jsonl").read_text().splitlines()]
        assert (ep["task_id"], ep["init_state"]) == (0, 0)
        assert (ep["steps"] < 4) if ep["success"] else (ep["steps"] == 4)  # --max-steps 4
        won[v] = ep["success"]
        assert r["episodes"] == 1 and r["complete"] and r["successes"] == int(ep["success"])
        assert r["ci95"] == list(wilson_interval(r["successes"], 1)) and r["seeds"]["0"]["successes"] == r["successes"]
    paired = json.loads((tmp_path / "out" / "success.json").read_text())["paired_vs_dense"]
    c = paired["grids-16"]
    assert set(paired) == {"grids-16"} and c["seeds"] == [0]
    a, b = won["grids-16"], won["dense"]  # one episode pair: exactly one of the four counts is 1
    assert (c["both"], c["only_a"], c["only_b"], c["neither"]) == (a and b, a and not b, b and not a, not (a or b))
    assert c["p"] == mcnemar_exact(c["only_a"], c["only_b"])
    ckpt = tmp_path / "out" / "runs" / "grids-16_s0" / "checkpoints"
    stamp = {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()}
    bench.main(args)  # a finished run is neither retrained nor re-evaluated
    assert {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()} == stamp
    g = res["grids-16"]
    row = f"| grids-16 | {g['successes']}/1 = {100 * g['rate']:.1f} % |"
    assert row in (tmp_path / "out" / "success.md").read_text()

    # --archive keeps the small result files; with the run folders gone, the report is rebuilt from them alone
    archive = tmp_path / "archive"
    bench.main([*args, "--archive", str(archive)])
    assert sorted(p.name for p in (archive / "grids-16_s0").iterdir()) == [
        "data.json", "episodes.jsonl", "metrics.csv", "results.json", "results.md", "train_config.json"]
    run = tmp_path / "out" / "runs" / "grids-16_s0"
    for rel in bench.ARCHIVED:  # byte for byte (metrics.csv rows end in \r\n)
        assert (archive / "grids-16_s0" / Path(rel).name).read_bytes() == (run / rel).read_bytes()
    fingerprint = json.loads((archive / "grids-16_s0" / "data.json").read_text())
    assert fingerprint["demos"] == 1 and {k: v for k, v in fingerprint.items() if k not in bench.HOST_KEYS} == {
        "data": str(demos), **bench.data_fingerprint(str(demos))}
    assert set(bench.HOST_KEYS) <= set(fingerprint) and fingerprint["torch"] == __import__("torch").__version__
    shutil.rmtree(archive)  # --phase report archives the finished runs too
    bench.main([*args, "--phase", "report", "--archive", str(archive)])
    assert (archive / "dense_s0" / "results.json").read_bytes() == (tmp_path / "out" / "runs" / "dense_s0" / "eval" /
                                                                     "results.json").read_bytes()
    shutil.rmtree(tmp_path / "out" / "runs")
    bench.main([*args, "--archive", str(archive)])
    assert not (tmp_path / "out" / "runs").exists()  # nothing retrained or re-evaluated
    again = json.loads((tmp_path / "out" / "success.json").read_text())["variants"]
    assert {v: r["successes"] for v, r in again.items()} == {v: r["successes"] for v, r in res.items()}
    assert again["dense"]["seeds"]["0"]["source"] == str(archive / "dense_s0")
    assert json.loads((tmp_path / "out" / "success.json").read_text())["paired_vs_dense"] == paired
    # an archived run with other settings, or trained on other demos, is refused, naming the difference
    report = [*args, "--phase", "report", "--archive", str(archive)]
    with pytest.raises(SystemExit, match="steps: archived 2, asked 3"):
        bench.main([*report, "--steps", "3"])
    regenerated = {**fingerprint, "frames": fingerprint["frames"] + 1, "actions_sha256": "0" * 64}
    (archive / "dense_s0" / "data.json").write_text(json.dumps(regenerated))
    bench.main(report)  # the same scenes, other actions (a regeneration elsewhere): pooled
    assert "regenerations of one scene set" not in (tmp_path / "out" / "success.md").read_text()
    for other in ({**regenerated, "scenes_sha256": "1" * 64}, {**regenerated, "scenes_sha256": None}):
        (archive / "dense_s0" / "data.json").write_text(json.dumps(other))
        with pytest.raises(SystemExit, match=r"data: archived '1 demos / \d+ frames'"):
            bench.main(report)
    with pytest.raises(SystemExit, match="2 different demo sets"):  # without the data, runs are compared to each other
        bench.main([*report, "--data", str(tmp_path / "gone")])


def test_demo_fingerprint_tells_a_regeneration_from_other_demos(tmp_path, demos) -> None:
    """Same task files, env args and scene seeds: one demo set (``demo_set``) even when the actions differ; another
    seed, or a demo without one, is not."""
    import h5py

    from grids_vla.envs.libero.dataset import demo_fingerprint, demo_set

    base = demo_fingerprint(demos)
    assert base["demos"] == 1 and base["scenes_sha256"] and demo_set(base) == base["scenes_sha256"]
    assert demo_fingerprint(tmp_path / "none") is None

    def edited(name, edit):
        copy = tmp_path / name
        shutil.copytree(demos, copy)
        with h5py.File(next(copy.glob("*_demo.hdf5")), "r+") as f:
            edit(f["data"]["demo_0"])
        return demo_fingerprint(copy)

    def nudge(demo):
        demo["actions"][0, 0] += 1e-6

    def reseed(demo):
        demo.attrs["seed"] = int(demo.attrs["seed"]) + 1

    regen = edited("regen", nudge)
    assert regen["actions_sha256"] != base["actions_sha256"] and demo_set(regen) == demo_set(base)
    assert demo_set(edited("reseeded", reseed)) != demo_set(base)
    unseeded = edited("unseeded", lambda demo: demo.attrs.__delitem__("seed"))
    assert unseeded["scenes_sha256"] is None and demo_set(unseeded) == unseeded["actions_sha256"]


def test_train_speed_leaves_out_the_restart_of_a_resumed_run(tmp_path) -> None:
    bench = _load()
    rows = ["step,loss,lr,grad_norm,samples_per_s,elapsed_s"]
    rows += [f"{s},0.5,1e-4,1.0,10,{s * 2.0}" for s in range(1, 31)]  # 2 s per step
    rows += [f"{s},0.5,1e-4,1.0,10,{(s - 30) * 1.0}" for s in range(31, 61)]  # resumed: the clock restarts, 1 s/step
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(rows) + "\n")
    # skip=5: steps 7-30 at 2 s (24 of them) and 37-60 at 1 s (24): 48 steps x 4 samples in 72 s
    assert bench._train_speed(path, batch_size=4, skip=5) == pytest.approx(48 * 4 / 72)
    assert bench._train_speed(tmp_path / "missing.csv", batch_size=4) is None


def test_pipeline_benchmark_times_every_variant_through_the_training_loop(tmp_path, demos) -> None:
    bench = _load("pipeline")
    res = bench.main(["--data", str(demos), "--variants", "dense", "grids-16", "--steps", "5", "--skip", "1",
                      "--rounds", "2", "--batch-size", "2", "--num-workers", "0", "--threads", "1",
                      "--out", str(tmp_path), "--allow-busy"])
    table = (tmp_path / "pipeline.md").read_text()
    for v in ("dense", "grids-16"):
        steps, rounds = res["step_s"][v], res["round_samples_per_s"][v]
        assert len(steps) == 2 * 3 and all(t > 0 for t in steps)  # 2 rounds x (5 - 1 - 1)
        assert rounds == [2 * 3 / sum(steps[:3]), 2 * 3 / sum(steps[3:])]  # each round's speed from its own steps
        med = statistics.median(steps)
        assert f"| {v} | {1000 * med:.1f} | {2 / med:.1f} | {rounds[0]:.1f}, {rounds[1]:.1f} |" in table
    assert json.loads((tmp_path / "pipeline.json").read_text())["step_s"] == res["step_s"]
    with pytest.raises(SystemExit, match="must exceed"):
        bench.main(["--data", str(demos), "--steps", "2", "--skip", "1", "--allow-busy"])


def test_throughput_benchmark_times_each_preset_side_by_side(tmp_path) -> None:
    res = _load("throughput").main(["--variants", "dense", "grids-16", "--rounds", "2", "--warmup", "0",
                                    "--batch-size", "2", "--threads", "1", "--out", str(tmp_path), "--allow-busy"])
    table = (tmp_path / "throughput.md").read_text()
    med = {v: (statistics.median(res["train_ms"][v]), statistics.median(res["infer_ms"][v])) for v in res["train_ms"]}
    for v, tokens in (("dense", 512), ("grids-16", 32)):
        assert len(res["train_ms"][v]) == 2 and len(res["infer_ms"][v]) == 2
        t, i = med[v]
        assert f"| {v} | {tokens} | " in table and f"| {t:.1f} | {2 / t * 1000:.1f} | {med['dense'][0] / t:.2f}x | " \
            f"{i:.2f} | {med['dense'][1] / i:.2f}x |" in table
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert saved["args"]["batch_size"] == 2 and saved["train_ms"] == res["train_ms"]


def test_study_plan_runs_stages_in_order_keeps_checkpoints_and_adds_ood_later(tmp_path, demos) -> None:
    """``--plan``: stage order, a float16 ``final/`` policy that is evaluated and archived, out-of-distribution
    evaluations added by a later stage, and (with the run folder gone) from the archived checkpoint alone."""
    bench = _load()
    archive = tmp_path / "archive"
    plan = {"suite": "libero_object", "data": str(demos), "archive": str(archive), "steps": 2, "batch_size": 2,
            "warmup_steps": 0, "episodes_per_task": 1, "ood_episodes_per_task": 1,
            "stages": [{"name": "core", "variants": ["grids-16", "dense"], "seeds": [0]},
                       {"name": "ood", "variants": ["grids-16"], "seeds": [0], "keep": True,
                        "ood": ["lighting:0.5"]}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    common = ["--plan", str(tmp_path / "plan.json"), "--tasks", "0", "--save-every", "1", "--num-workers", "0",
              "--max-steps", "4", "--threads", "1", "--out", str(tmp_path / "out")]
    import argparse
    order = bench.jobs(argparse.Namespace(plan=bench.load_plan(str(tmp_path / "plan.json")), stage=None))
    assert order == [("grids-16", 0, True, ()), ("dense", 0, False, ()), ("grids-16", 0, True, ("lighting:0.5",))]
    bench.main(common)
    run, kept = tmp_path / "out" / "runs" / "grids-16_s0", archive / "grids-16_s0"
    res = json.loads((run / "eval" / "results.json").read_text())
    assert res["run"]["checkpoint"] == str(run / "final")  # evaluated from the float16 policy
    from safetensors.torch import load_file
    assert {v.dtype for v in load_file(str(run / "final" / "model.safetensors")).values() if v.is_floating_point()} \
        == {__import__("torch").float16}
    weights = (run / "final" / "model.safetensors").read_bytes()
    assert (kept / "checkpoint" / "model.safetensors").read_bytes() == weights
    assert not (archive / "dense_s0" / "checkpoint").exists()  # only kept runs keep weights
    ood = json.loads((kept / "ood" / "lighting-0.5" / "results.json").read_text())
    assert ood["complete"] and ood["run"]["perturbation"] == "lighting:0.5"
    # the run folders gone, a later stage's new perturbation is evaluated from the archived checkpoint alone, and
    # the kept checkpoint plays the archived in-distribution episode action for action
    shutil.rmtree(tmp_path / "out")
    plan["stages"].append({"name": "more", "variants": ["grids-16"], "seeds": [0],
                           "ood": ["lighting:0.5", "table_color:0.5", "blind"]})
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    real_eval = bench.eval_run

    def stop_at_blind(args, variant, seed, perturbation=None):  # a stop in the middle of the stage
        if perturbation == "blind":
            raise KeyboardInterrupt
        return real_eval(args, variant, seed, perturbation)

    bench.eval_run = stop_at_blind
    try:
        with pytest.raises(KeyboardInterrupt):
            bench.main([*common, "--stage", "more"])
    finally:
        bench.eval_run = real_eval
    # what finished before the stop is archived already; lighting (archived earlier) was not evaluated again
    assert json.loads((kept / "ood" / "table_color-0.5" / "results.json").read_text())["complete"]
    assert not (tmp_path / "out" / "runs" / "grids-16_s0" / "ood" / "lighting-0.5").exists()
    bench.main([*common, "--stage", "more"])
    assert not (tmp_path / "out" / "runs" / "grids-16_s0" / "checkpoints").exists()  # nothing retrained
    assert json.loads((kept / "ood" / "table_color-0.5" / "results.json").read_text())["complete"]
    blind = json.loads((kept / "ood" / "blind" / "results.json").read_text())
    assert blind["complete"] and blind["run"]["blind"] == ["agentview", "eye_in_hand"]
    assert blind["run"]["perturbation"] is None
    from grids_vla.policy.evaluation import EvalConfig, evaluate
    evaluate(EvalConfig(checkpoint=str(kept / "checkpoint"), suite="libero_object", tasks=(0,), episodes_per_task=1,
                        max_steps=4, out=str(tmp_path / "replay")))
    replay = [json.loads(line) for line in (tmp_path / "replay" / "episodes.jsonl").read_text().splitlines()]
    archived = [json.loads(line) for line in (kept / "episodes.jsonl").read_text().splitlines()]
    assert [e["actions_sha256"] for e in replay] == [e["actions_sha256"] for e in archived]
    with pytest.raises(SystemExit, match="dense seed 0 still needs.*keeps no checkpoint"):
        plan["stages"].append({"name": "bad", "variants": ["dense"], "seeds": [0], "ood": ["lighting:0.5"]})
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        bench.main([*common, "--stage", "bad"])
    with pytest.raises(SystemExit, match=r"--stage \['nope'\]: not in the plan"):
        bench.main([*common, "--stage", "nope"])
    (tmp_path / "bad.json").write_text(json.dumps({**plan, "stages": [{"variants": ["grids-17"], "seeds": [0]}]}))
    with pytest.raises(SystemExit, match="variants must be preset names"):
        bench.main(["--plan", str(tmp_path / "bad.json")])


@pytest.mark.parametrize("name", ["throughput", "pipeline"])
def test_timing_benchmarks_refuse_a_busy_machine(name: str, monkeypatch, tmp_path) -> None:
    bench = _load(name)
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (1.7, 1.0, 0.5))
    with pytest.raises(SystemExit, match=r"load average is 1\.70 \(> 0\.5\).*--allow-busy"):
        bench.main(["--data", str(tmp_path)] if name == "pipeline" else [])


@pytest.mark.parametrize("plan", sorted(p.name for p in BENCH.glob("study*.json")))
def test_committed_study_plans_are_valid(plan: str) -> None:
    bench = _load()
    loaded = bench.load_plan(str(BENCH / plan))
    import argparse
    order = bench.jobs(argparse.Namespace(plan=loaded, stage=None))
    assert order and loaded["archive"].startswith("benchmarks/libero/study/") and loaded["suite"] in loaded["archive"]
    assert all(v in bench.PRESETS for v, *_ in order)
