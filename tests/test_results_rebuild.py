"""``benchmarks/results.py``: the study's report is what its script makes of the committed run folders.

(a) A small synthetic study (built here: variants made clearly better, equal and clearly worse than dense, an
out-of-distribution evaluation, a run still in progress, missing sections) comes out with the right numbers, verdicts
and plots. (b) Rebuilding from the committed ``benchmarks/libero/study`` and archive gives the committed
``benchmarks/RESULTS.md`` byte for byte, so a stale report fails. Needs no simulator: the script only reads files.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from grids_vla.experiments.report import summarize
from grids_vla.policy.configuration_grids_vla import GridSVLAConfig
from grids_vla.policy.evaluation import mcnemar_exact, wilson_interval

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTIONS = ("pick the milk and place it in the basket", "pick the butter and place it in the basket")


def _load():
    """benchmarks/results.py as a module (registered first: its dataclasses look their module up)."""
    if "results_rebuild" not in sys.modules:
        spec = importlib.util.spec_from_file_location("results_rebuild", ROOT / "benchmarks" / "results.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return sys.modules["results_rebuild"]


def _write_eval(folder: Path, variant: str, outcome, inits: int, perturbation: str | None = None,
                complete: bool = True, points: dict | None = None, episode_points: dict | None = None) -> None:
    """An evaluation folder as ``grids-vla eval`` writes it: 2 tasks x ``inits`` init states, success given by
    ``outcome(task, init)``."""
    cfg = GridSVLAConfig.preset(variant)
    run = {"checkpoint": "final", "weights_sha256": "0" * 64, "suite": "libero_object", "perturbation": perturbation,
           "tasks": [0, 1], "instructions": {"0": INSTRUCTIONS[0], "1": INSTRUCTIONS[1]}, "episodes_per_task": inits,
           "max_steps": 280, "execute": 8, "chunk": 8, "settle_steps": 10, "threads": 1, "image_size": 128,
           "reducer": cfg.reducer, "k": cfg.k, "cameras": ["agentview", "eye_in_hand"], "msaa": False, "workers": 2}
    episodes = [{"task_id": t, "episode": i, "init_state": i, "success": bool(outcome(t, i)),
                 "steps": 120 if outcome(t, i) else 280, "latencies_ms": [10.0 if cfg.reducer == "dense" else 5.0],
                 **({"points": episode_points} if episode_points else {})}
                for t in (0, 1) for i in range(inits)]
    if not complete:
        episodes = episodes[:3]
    res = summarize(run, episodes)
    if points:
        res["points"] = points
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(res, indent=2))
    (folder / "results.md").write_text("# an evaluation\n")
    (folder / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))


def _write_run(root: Path, variant: str, seed: int, outcome, ood: dict | None = None, ood_points: dict | None = None,
               **kw) -> Path:
    folder = root / "libero_object" / f"{variant}_s{seed}"
    model = GridSVLAConfig.preset(variant, instructions=INSTRUCTIONS).to_dict()
    folder.mkdir(parents=True)
    (folder / "train_config.json").write_text(json.dumps({"train": {"steps": 3000, "batch_size": 32, "lr": 3e-4,
                                                                    "warmup_steps": 100, "seed": seed, "shift": 4,
                                                                    "color_jitter": 0.1}, "model": model}))
    (folder / "data.json").write_text(json.dumps({"data": "runs/libero/data/libero_object", "demos": 40,
                                                  "frames": 5000, "actions_sha256": "ab" * 32}))
    (folder / "metrics.csv").write_text("step,loss,lr,grad_norm,samples_per_s,elapsed_s\r\n")
    _write_eval(folder, variant, outcome, 10, **kw)
    for name, fn in (ood or {}).items():
        _write_eval(folder / "ood" / name.replace(":", "-"), variant, fn, 5, perturbation=name, points=ood_points)
    return folder


POINTS = {"agentview": {"episodes": 20, "frames": 400, "within_episode": 0.001, "across_episodes": 0.002,
                        "policy": {"within_radius": 0.25, "mean_distance_px": 20.0, "on_mask": 0.2},
                        "fixed-grid": {"within_radius": 0.05, "mean_distance_px": 40.0, "on_mask": 0.04},
                        "random": {"within_radius": 0.06, "mean_distance_px": 41.0, "on_mask": 0.05}}}


OOD_POINTS = {"agentview": {**POINTS["agentview"], "within_episode": 0.003,
                            "policy": {"within_radius": 0.15, "mean_distance_px": 25.0, "on_mask": 0.1}}}


EPISODE_POINTS = {"agentview": {"frames": 30, "mean_px": [[10.0, 10.0]],
                                "policy": {"within_episode": 0.1, "within_radius": 0.1, "on_mask": 0.3},
                                "fixed-grid": {"within_radius": 0.1, "on_mask": 0.1},
                                "still": {"within_radius": 0.1, "on_mask": 0.35}}}


def bench_rows(lines: list[str]) -> list[list[str]]:
    """Cells of the body rows of the (one) table in ``lines``."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")][1:]


def _row(md: str, first: str, after: str = "") -> list[str]:
    """Cells of the first table row starting with ``first`` after the line containing ``after``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    for line in lines[start:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} after {after!r}")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, str, Path]:
    root = tmp_path_factory.mktemp("study")
    study = root / "study"
    # dense: half the episodes (even init states); GridS-16: all but one per seed; GridS-4: dense with one success
    # and one failure swapped per seed (equal); GridS-1: 2 of 20 (clearly worse).
    for seed in (0, 1, 2):
        _write_run(study, "dense", seed, lambda t, i: i % 2 == 0,
                   ood={"lighting:0.8": lambda t, i: i == 0} if seed < 2 else None)
        _write_run(study, "grids-16", seed, lambda t, i: (t, i) != (0, 0), points=POINTS, ood_points=OOD_POINTS,
                   ood={"lighting:0.8": lambda t, i: i < 4} if seed < 2 else None)
        _write_run(study, "grids-4", seed, lambda t, i, s=seed: (i % 2 == 0) != ((t, i) in ((0, 2 * s), (1, 1))))
        _write_run(study, "grids-1", seed, lambda t, i: i == 0)
    for seed in (0, 1, 2):  # an ablation as good as dense (clearly below GridS-16), a peer equal to GridS-16
        _write_run(study, "grids-16-random", seed, lambda t, i: i % 2 == 0)
    for seed in (0, 1):
        _write_run(study, "tokenlearner-16", seed, lambda t, i: (t, i) != (0, 0))
    _write_run(study, "grids-64", 4, lambda t, i: True)  # a seed dense does not have: compared unpaired
    _write_run(study, "topk-16", 0, lambda t, i: True, complete=False)  # still running: left out of the tables
    figures = root / "out" / "figures"
    figures.mkdir(parents=True)
    (figures / "ablations.png").write_bytes(b"stale")  # overwritten
    out = root / "out" / "RESULTS.md"
    bench = _load()
    text = bench.rebuild(study, root / "no_archive", out, figures, n_boot=500, plans=[])
    assert out.read_text() == text
    return study, text, figures


def test_rebuild_tables_and_verdicts(synthetic) -> None:
    _, md, _ = synthetic
    main = "## libero_object: success per variant"
    dense = _row(md, "dense", main)
    assert dense[1:5] == ["256", "3/5", "30/60 = 50.0 %", "38-62 %"] and dense[-1] == "reference"
    g16 = _row(md, "grids-16", main)
    assert g16[1:4] == ["16", "3/5", "57/60 = 95.0 %"] and g16[5] == "s0: 19/20, s1: 19/20, s2: 19/20"
    assert g16[6].startswith("+45.0 [") and g16[-1] == "better than dense"
    assert g16[7] == "<0.001" and mcnemar_exact(30, 3) < 0.001  # per seed 10 pairs for GridS-16, 1 for dense
    readme = bench_rows(_load().readme_section(md, ""))  # the README's summary reads this very table
    assert readme[:2] == [["LIBERO libero_object", "dense", "all tokens", "3", "30/60 = 50.0 %", "reference",
                           "reference"], ["LIBERO libero_object", "grids-16", "GridS", "3", "57/60 = 95.0 %", g16[6],
                                          "better than dense"]]
    assert _row(md, "grids-4", main)[-1] == "no detectable difference"
    assert _row(md, "grids-4", main)[6].startswith("+0.0 [")
    assert _row(md, "grids-1", main)[-1] == "worse than dense"
    assert _row(md, "topk-16", main)[3] == "in progress (s0)"  # its only run is incomplete
    assert _row(md, "perceiver-16", main)[3] == "not yet measured"
    assert "still running or incomplete: topk-16_s0" in md
    assert "steps 3000 (all 19 runs)" in md and "init states 0-9 (18 runs), 0-2 (1 run)" in md
    assert "no date or hardware recorded in these run files" in md
    # paired counts seed by seed and pooled
    assert _row(md, "grids-16", "Paired episodes against dense")[1:] == ["s0", "9", "10", "1", "0", "0.012"]
    assert "| grids-16 | pooled | 27 | 30 | 3 | 0 | <0.001 |" in md
    assert "| grids-4 | pooled | 27 | 3 | 3 | 27 | 1.000 |" in md
    assert _row(md, "grids-64", main)[6].startswith("+50.0 [") and "Compared unpaired (no seed of theirs holds the " \
        "same episodes as dense's): grids-64." in md
    assert _row(md, "tokenlearner-16", main)[6].endswith("] on s0, s1")  # paired on the seeds both have
    run = _row(md, "grids-16", "Every run: success")
    assert run[1:6] == ["s0", "19/20 = 95.0 %", "76-99 %", "128", "5.00"] and run[7] == "`libero_object/grids-16_s0`"


def test_rebuild_sections_k_flops_peers_ood_points(synthetic) -> None:
    _, md, figures = synthetic
    assert _row(md, "1", "## Success vs K")[1] == "grids-1" and _row(md, "16", "## Success vs K")[1] == "grids-16"
    flops = {n: _row(md, n, "## Success vs end-to-end FLOPs") for n in ("dense", "grids-16")}
    assert float(flops["grids-16"][1]) < float(flops["dense"][1]) and flops["dense"][2] == "1.00x"
    assert _row(md, "grids-16", "## Peers at equal tokens")[5] == "reference"
    ood = _row(md, "lighting:0.8", "## Out of distribution")  # dense comes first in the variant order
    assert ood[1:4] == ["dense", "2", "4/20 = 20.0 %"] and ood[4].startswith("-40.0 [")
    g16 = next(r for r in md.splitlines() if r.startswith("| lighting:0.8 | grids-16 |"))
    assert "16/20 = 80.0 %" in g16 and "| -10.0 [" in g16 and g16.endswith("| better than dense |")
    pts = _row(md, "grids-16", "## Where the points look")
    assert pts[1:5] == ["agentview", "3", "95.0 %", "0.0010"] and pts[6:9] == ["0.250", "0.050", "0.060"]
    ood_pts = _row(md, "lighting:0.8", "Out of distribution, the same measures")  # seeds 0-1 have it
    assert ood_pts[1:6] == ["grids-16", "agentview", "2", "16/20 = 80.0 %", "0.0030"]
    assert ood_pts[7:10] == ["0.150", "0.050", "0.060"] and ood_pts[10] == "0.100"
    for name in ("success_vs_k.png", "success_vs_flops.png", "ablations.png", "peers.png", "ood_heatmap.png"):
        assert (figures / name).stat().st_size > 1000 and f"![{name}](figures/{name})" in md
    abl = _row(md, "random coordinates", "## Ablations")
    assert abl[1:4] == ["grids-16-random", "3", "30/60 = 50.0 %"] and abl[4].startswith("-45.0 [")
    assert abl[5:] == ["worse than GridS-16", "-15.3", "no"]
    peer = _row(md, "tokenlearner-16", "## Peers at equal tokens")
    assert peer[1:4] == ["tokenlearner", "2", "38/40 = 95.0 %"] and peer[6] == "no detectable difference"
    assert _row(md, "grids-16", "## Peers at equal tokens")[5] == "reference"


def test_rebuild_skips_plots_without_data_and_removes_stale_ones(synthetic, tmp_path) -> None:
    study, _, _ = synthetic
    only = tmp_path / "study" / "libero_object"
    only.mkdir(parents=True)
    for name in ("dense_s0", "grids-16_s0"):
        shutil.copytree(study / "libero_object" / name, only / name, ignore=shutil.ignore_patterns("ood"))
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "ood_heatmap.png").write_bytes(b"stale")
    (figures / "notes.txt").write_text("not ours")
    md = _load().rebuild(tmp_path / "study", tmp_path / "none", tmp_path / "RESULTS.md", figures, n_boot=200, plans=[])
    assert "Plot `ood_heatmap.png` skipped: no data." in md and "No out-of-distribution evaluation yet" in md
    assert "Plot `ablations.png` skipped: no ablation compared yet." in md
    assert sorted(p.name for p in figures.iterdir()) == ["notes.txt", "peers.png", "success_vs_flops.png",
                                                         "success_vs_k.png"]
    one_seed = "better than dense (1 seed: seed-to-seed spread not captured)"
    assert _row(md, "grids-16", "## libero_object")[-1] == one_seed


def test_rebuild_missing_sections_say_not_yet_measured(synthetic) -> None:
    _, md, _ = synthetic
    assert _row(md, "no geometry injection", "## Ablations")[4] == "not yet measured"
    assert "No complete evaluation on libero_spatial yet: not yet measured." in md
    assert "No archived runs: not yet measured." in md
    claims = "## The paper's claims beside ours"
    assert _row(md, "GridS-16 keeps dense success on LIBERO-Object", claims)[-1].startswith("reproduced")
    assert _row(md, "GridS-1 keeps dense success on LIBERO-Object", claims)[-1].startswith("not reproduced")
    assert _row(md, "GridS-16 keeps dense success on LIBERO-Spatial", claims)[-1] == "not yet measured"
    ablation = "Ablation: random coordinates costs success (K=16; paper on a real robot, ours on libero_object)"
    assert _row(md, ablation, claims)[-1] == "reproduced (the direction; the paper's size lies outside)"
    assert _row(md, "Real-robot success gain (SO100, SmolVLA)", claims)[-1].startswith("not testable here")
    assert "/tmp" not in md and str(ROOT) not in md  # no local paths


def test_rebuild_is_deterministic(synthetic, tmp_path) -> None:
    study, md, _ = synthetic
    again = _load().rebuild(study, tmp_path / "no_archive", tmp_path / "RESULTS.md", tmp_path / "figures",
                            n_boot=500, plans=[])
    assert again == md


def test_rebuild_second_suite_gets_its_own_tables_and_heatmap(synthetic, tmp_path) -> None:
    study, _, _ = synthetic
    for name in ("dense_s0", "dense_s1", "grids-16_s0", "grids-16_s1"):
        shutil.copytree(study / "libero_object" / name, tmp_path / "study" / "libero_spatial" / name)
    figures = tmp_path / "figures"
    md = _load().rebuild(tmp_path / "study", tmp_path / "none", tmp_path / "RESULTS.md", figures, n_boot=200, plans=[])
    spatial = md[md.index("## Second suite: libero_spatial"):md.index("## Archived runs")]
    assert _row(spatial, "grids-16")[1:4] == ["16", "2/3", "38/40 = 95.0 %"]
    assert "### Out of distribution (libero_spatial)" in spatial and "| lighting:0.8 | grids-16 | 2 |" in spatial
    assert "### Where the points look (GridS-like runs, libero_spatial)" in spatial
    assert (figures / "ood_heatmap_libero_spatial.png").is_file()
    assert "No complete evaluation on libero_object yet: not yet measured." in md
    shutil.rmtree(tmp_path / "study" / "libero_spatial")  # gone from the study: its heatmap goes too
    _load().rebuild(tmp_path / "study", tmp_path / "none", tmp_path / "RESULTS.md", figures, n_boot=200, plans=[])
    assert not (figures / "ood_heatmap_libero_spatial.png").exists()


def test_command_line_on_a_missing_study(tmp_path) -> None:
    out = tmp_path / "docs" / "RESULTS.md"
    so101 = tmp_path / "so101.md"
    so101.write_text(f"# SO-101\n\n{_load().SO101_BEGIN}\n{_load().SO101_END}\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# a readme\n{_load().README_BEGIN}\nold\n{_load().README_END}\nkept\n")
    assert _load().main(["--study", str(tmp_path / "nothing"), "--archive", str(tmp_path / "nothing"), "--out",
                         str(out), "--figures", str(tmp_path / "docs" / "figures"), "--n-boot", "10", "--plans",
                         "--so101-archive", str(tmp_path / "nothing"), "--so101-out", str(so101),
                         "--readme", str(readme)]) == 0
    assert readme.read_text() == (f"# a readme\n{_load().README_BEGIN}\n\nNo study has a complete evaluation yet: "
                                  f"not yet measured.\n\n{_load().README_END}\nkept\n")
    assert "No SO-101 policy run archived under `nothing/` yet: not yet measured." in so101.read_text()
    md = out.read_text()
    assert "No study plan file was found; the plan shown is the copy in `benchmarks/results.py`." in md
    assert "No run folders under `nothing/` yet: not yet measured." in md and "No archived runs" in md
    assert md.count("skipped: no data") == 4 and not (tmp_path / "docs" / "figures").exists()


def test_plan_files_set_the_planned_variants_and_ood(tmp_path) -> None:
    plan = {"suite": "libero_goal", "ood_episodes_per_task": 5, "ood_plus_per_task": 2, "stages": [
        {"name": "core", "variants": ["grids-16", "dense"], "seeds": [0, 1, 2]},
        {"name": "more", "variants": ["dense"], "seeds": [3]},
        {"name": "extra", "variants": ["tome-16"], "seeds": [0]},
        {"name": "ood", "variants": ["dense"], "seeds": [0], "ood": ["lighting:0.8"]}]}
    (tmp_path / "study_goal.json").write_text(json.dumps(plan))
    (tmp_path / "broken.json").write_text("{")
    bench = _load()
    planned, ood, read = bench.load_plans([tmp_path / "study_goal.json", tmp_path / "broken.json"])
    assert planned == {"libero_goal": {"dense": (4, False), "grids-16": (3, False), "tome-16": (1, True)}}
    assert ood == {"libero_goal": "lighting:0.8 on dense (seeds 0), 5 episodes per task (2 variant tasks per task "
                                  "for LIBERO-plus)"} and read == ["study_goal.json"]
    assert bench.load_plans([tmp_path / "broken.json"])[0] is bench.PLAN  # nothing readable: the built-in copy


def test_committed_results_md_is_rebuilt_byte_for_byte(tmp_path) -> None:
    """The committed report is what the script makes of the committed runs and plan files: after adding a run or
    changing a plan, rerun `python benchmarks/results.py` and commit benchmarks/RESULTS.md and benchmarks/figures/."""
    bench = _load()
    out, figures = tmp_path / "RESULTS.md", tmp_path / "figures"
    bench.rebuild(ROOT / "benchmarks" / "libero" / "study", ROOT / "benchmarks" / "libero" / "success", out, figures)
    committed = (ROOT / "benchmarks" / "RESULTS.md").read_bytes()
    assert out.read_bytes() == committed, "benchmarks/RESULTS.md is stale: run python benchmarks/results.py"
    made = sorted(p.name for p in figures.glob("*.png")) if figures.is_dir() else []
    kept = sorted(p.name for p in (ROOT / "benchmarks" / "figures").glob("*.png"))
    assert made == kept, "benchmarks/figures/ does not match the plots the report links to"


# --------------------------------------------------------------------------------------------------------- SO-101
SO101_TASKS = ("pick_place_bowl", "stack")
SO101_INSTRUCTIONS = ("put the red cube in the bowl", "stack the red cube on the blue cube")


def _write_so101_eval(folder: Path, variant: str, outcome, scenes: int, perturbation: str | None) -> None:
    """A merged SO-101 evaluation as ``benchmarks/libero/success.py`` writes it: task i of the plan is ``task_id`` i,
    scene i its ``init_state``; success given by ``outcome(task_id, scene)``."""
    cfg = GridSVLAConfig.preset(variant)
    run = {"checkpoint": "final", "weights_sha256": "0" * 64, "env": "so101", "suite": "so101 pick_place_bowl+stack",
           "scenes": "ood" if perturbation else "in", "perturbation": perturbation, "tasks": [0, 1],
           "task_names": list(SO101_TASKS), "instructions": {"0": "put the COLOUR cube in the bowl",
                                                           "1": "stack the COLOUR cube on the COLOUR cube"},
           "scene_seeds": "ood_scenes(task)[episode]" if perturbation else "sample_scene(task, 4294967296 + episode)",
           "episodes_per_task": scenes, "max_steps": 160, "execute": 8, "chunk": 8, "settle_steps": 0, "threads": 1,
           "image_size": 128, "reducer": cfg.reducer, "k": cfg.k, "cameras": ["agentview", "eye_in_hand"],
           "workers": 2}
    episodes = [{"task_id": t, "task": SO101_TASKS[t], "scenes": run["scenes"], "episode": i, "init_state": i,
                 "success": bool(outcome(t, i)), "steps": 50 if outcome(t, i) else 160, "latencies_ms": [5.0]}
                for t in (0, 1) for i in range(scenes)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(summarize(run, episodes), indent=2))
    (folder / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))


def _write_so101_run(archive: Path, variant: str, seed: int, ind, ood=None, complete: bool = True) -> None:
    folder = archive / f"{variant}_s{seed}"
    folder.mkdir(parents=True)
    model = GridSVLAConfig.preset(variant, action_dim=4, instructions=SO101_INSTRUCTIONS).to_dict()
    (folder / "train_config.json").write_text(json.dumps({"train": {"steps": 1500, "batch_size": 32, "lr": 3e-4,
                                                                    "warmup_steps": 100, "seed": seed},
                                                          "model": model}))
    (folder / "data.json").write_text(json.dumps({"data": "runs/so101/data", "demos": 100, "frames": 5000,
                                                  "actions_sha256": "cd" * 32, "date": "2026-12-07"}))
    _write_so101_eval(folder, variant, ind, 5 if complete else 2, None)
    if not complete:  # a run still evaluating: its results say so
        res = json.loads((folder / "results.json").read_text())
        res["complete"] = False
        (folder / "results.json").write_text(json.dumps(res))
    if ood is not None:
        _write_so101_eval(folder / "ood" / "ood_scenes", variant, ood, 3, "ood_scenes")


def test_so101_section_round_trips_a_synthetic_archive(tmp_path) -> None:
    bench = _load()
    archive = tmp_path / "study" / "pick_place_bowl+stack"
    for seed in (0, 1, 2):  # dense: 6/10 per seed, GridS-16: 9/10 (all but task 0 scene 0); OOD 2/6 vs 4/6
        _write_so101_run(archive, "dense", seed, lambda t, i: i % 2 == 0, lambda t, i: i == 0)
        _write_so101_run(archive, "grids-16", seed, lambda t, i: (t, i) != (0, 0), lambda t, i: i < 2)
    _write_so101_run(archive, "grids-16-l0", 0, lambda t, i: True, complete=False)
    plan = tmp_path / "study.json"
    plan.write_text(json.dumps({"env": "so101", "tasks": list(SO101_TASKS), "data": "runs/so101/data",
                                "steps": 1500, "batch_size": 32, "lr": 3e-4, "warmup_steps": 100,
                                "episodes_per_task": 5, "ood_episodes_per_task": 3, "stages": [
                                    {"name": "core", "variants": ["grids-16", "dense"], "seeds": [0, 1, 2]},
                                    {"name": "placement", "variants": ["grids-16-l0"], "seeds": [0, 1, 2]}]}))
    out = tmp_path / "RESULTS.md"
    out.write_text(f"# by hand\n\nkept\n\n{bench.SO101_BEGIN}\nstale rows\n{bench.SO101_END}\n\nalso kept\n")
    md = bench.rebuild_so101(plan, out, archive, n_boot=500)
    assert md == out.read_text() and md.startswith("# by hand\n\nkept\n\n" + bench.SO101_BEGIN)
    assert md.endswith(bench.SO101_END + "\n\nalso kept\n") and "stale rows" not in md
    assert bench_rows(bench.readme_section("", md))[0][:5] == ["SO-101, in distribution", "dense", "all tokens", "3",
                                                                "18/30 = 60.0 %"]  # read from this very table
    ind, ood = "in distribution", "out of distribution (`ood_scenes`)"
    lo, hi = wilson_interval(18, 30)
    assert _row(md, ind)[1:6] == ["dense", "3/3", "18/30 = 60.0 %", f"{100 * lo:.0f}-{100 * hi:.0f} %",
                                  "s0: 6/10, s1: 6/10, s2: 6/10"]
    g16 = next(r for r in md.splitlines() if r.startswith(f"| {ind} | grids-16 |"))
    cells = [c.strip() for c in g16.strip("|").split("|")]
    assert cells[2:4] == ["3/3", "27/30 = 90.0 %"] and cells[6].startswith("+30.0 [") and cells[-1] == "+22.2"
    assert cells[7] == f"{mcnemar_exact(12, 3):.3f}" and cells[8] == "better than dense"  # pooled: 4 vs 1 per seed
    ood_row = next(r for r in md.splitlines() if r.startswith(f"| {ood} | grids-16 |"))
    cells = [c.strip() for c in ood_row.strip("|").split("|")]
    assert cells[2:4] == ["3/3", "12/18 = 66.7 %"] and cells[6].startswith("+33.3 [") and cells[-1] == "+28.6"
    assert "| in distribution | grids-16-l0 | 0/3 | in progress |" in md
    assert f"| {ood} | grids-16-l0 | 0/3 | not yet measured |" in md
    claim = _row(md, "GridS-16 beats dense in distribution")
    assert claim[1] == "+22.2 pp" and claim[2].endswith("pp over 3 seed(s)") and claim[3].startswith("reproduced")
    assert _row(md, "out of distribution (`ood_scenes`)", "Per task")[1:] == ["dense", "3/9 = 33.3 %", "3/9 = 33.3 %"]
    assert "demonstrations 100 demos / 5000 frames / actions sha256 cdcdcdcdcdcd (all 7 runs)" in md
    assert bench.rebuild_so101(plan, out, archive, n_boot=500) == md  # deterministic
    out.write_text("# no generated section\n")
    with pytest.raises(SystemExit, match="found 0 begin and 0 end lines of the generated section"):
        bench.rebuild_so101(plan, out, archive)


def test_committed_so101_results_md_is_rebuilt_byte_for_byte(tmp_path) -> None:
    """The generated section of benchmarks/so101/RESULTS.md is what the script makes of the SO-101 study's archive
    and plan: after archiving a run, rerun `python benchmarks/results.py` and commit the file."""
    bench = _load()
    committed = ROOT / "benchmarks" / "so101" / "RESULTS.md"
    out = tmp_path / "RESULTS.md"
    shutil.copyfile(committed, out)
    bench.rebuild_so101(bench.SO101_PLAN, out)
    assert out.read_bytes() == committed.read_bytes(), "benchmarks/so101/RESULTS.md is stale: run benchmarks/results.py"


def test_demo_sets_tells_regenerations_from_other_data() -> None:
    bench = _load()
    a = {"demos": 2, "frames": 10, "actions_sha256": "ab" * 32, "scenes_sha256": "01" * 32}
    regen = {**a, "frames": 11, "actions_sha256": "cd" * 32}
    other = {**regen, "scenes_sha256": "02" * 32}
    assert bench.demo_sets([a, a]) == "2 demos / 10 frames / actions sha256 abababababab (all 2 runs)"
    assert "regenerations of one scene set" in bench.demo_sets([a, regen])
    assert "more than one demo set" in bench.demo_sets([a, other])
    assert "more than one demo set" in bench.demo_sets([a, {**regen, "scenes_sha256": None}])


def test_role_describes_how_the_points_are_predicted() -> None:
    """The report's description of a GridS variant follows its config: the attention head takes the instruction
    through its queries (not FiLM), and a head that reads the stem says so."""
    bench = _load()

    def described(preset: str) -> str:
        return bench.role(GridSVLAConfig.preset(preset).to_dict())[1]

    assert bench.role(GridSVLAConfig.preset("grids-16").to_dict()) == ("grids", 16)
    assert described("grids-16-attn-lr30-stem-lang") == ("attention predictor; instruction added to the point "
                                                         "queries; points read the stem's tokens")
    assert "FiLM" in described("grids-16-film")
    assert "stem" not in described("grids-16-attn-lr30")


# --------------------------------------------------------------------------------------------------------- README
def test_committed_readme_section_is_rebuilt_from_the_results_files(tmp_path) -> None:
    """The README's summary table is what the script reads off the committed benchmarks/RESULTS.md and
    benchmarks/so101/RESULTS.md: after rebuilding those, rerun `python benchmarks/results.py` and commit README.md."""
    bench = _load()
    readme = tmp_path / "README.md"
    shutil.copyfile(ROOT / "README.md", readme)
    libero = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    so101 = (ROOT / "benchmarks" / "so101" / "RESULTS.md").read_text()
    bench.replace_section(readme, bench.README_BEGIN, bench.README_END, bench.readme_section(libero, so101), "--readme")
    stale = "README.md's results are stale: run python benchmarks/results.py"
    assert readme.read_bytes() == (ROOT / "README.md").read_bytes(), stale


def test_readme_section_keeps_measured_rows_in_their_columns() -> None:
    bench = _load()
    libero = "\n".join(bench.table(
        ["variant", "tokens / camera", "seeds (done/planned)", "success (pooled)", "95 % Wilson", "per seed",
         "Δ vs dense", "p", "verdict"],
        [["dense", "256", "2/3", "15/20 = 75.0 %", "53-89 %", "s0: 8/10, s1: 7/10", "reference", "-", "reference"],
         ["grids-16", "16", "1/3", "9/10 = 90.0 %", "60-98 %", "s0: 9/10", "+10.0 [-20.0, +40.0]", "0.5", "no det."],
         ["topk-16", "-", "0/3", "not yet measured", "", "", "", "", ""],
         ["tome-16", "-", "0/1", "in progress (s0)", "", "", "", "", ""]]))
    peers = bench.table(["variant", "reducer", "seeds", "success"], [["grids-16", "GridS", "1", "-"]])
    libero += "\n\n" + "\n".join(peers)
    so101 = "\n".join(bench.table(
        ["split", "variant", "seeds (done/planned)", "success (pooled)", "95 % Wilson", "per seed", "Δ", "p", "verdict",
         "paper"],
        [["in distribution", "grids-16", "1/3", "3/4 = 75.0 %", "30-95 %", "s0: 3/4", "-", "-", "no dense run yet",
          "+22.2"],
         ["in distribution", "dense", "0/3", "not yet measured", "", "", "", "", "", ""]]))
    lines = bench.readme_section(libero, so101)
    assert lines[0] == bench.README_BEGIN and lines[-1] == bench.README_END
    assert bench_rows(lines) == [
        ["LIBERO libero_object", "dense", "all tokens", "2", "15/20 = 75.0 %", "reference", "reference"],
        ["LIBERO libero_object", "grids-16", "GridS", "1", "9/10 = 90.0 %", "+10.0 [-20.0, +40.0]", "no det."],
        ["SO-101, in distribution", "grids-16", "GridS", "1", "3/4 = 75.0 %", "-", "no dense run yet"]]
    assert bench.readme_section(libero, "# nothing generated yet\n")[:-2] == lines[:-3]  # the SO-101 row gone
    assert f"No study has a complete evaluation yet: {bench.NOT_YET}." in bench.readme_section("", "")


def test_predicted_points_are_compared_with_the_fixed_grid_at_their_placement(tmp_path) -> None:
    """Issue "Points that see" asks whether points that move beat points that stay: each GridS-like variant whose
    points are predicted is set against the fixed grid with its K and placement, in distribution and per OOD split."""
    study = tmp_path / "study"
    for seed in (0, 1, 2):
        lighting = {"lighting:0.8": lambda t, i: i < 2} if seed < 2 else None
        older = {"agentview": {k: v for k, v in EPISODE_POINTS["agentview"].items() if k != "still"}}
        _write_run(study, "grids-16", seed, lambda t, i: (t, i) != (0, 0), points=POINTS, ood=lighting,
                   episode_points=EPISODE_POINTS if seed < 2 else older)  # s2 evaluated before "still" existed
        _write_run(study, "grids-16-fixed", seed, lambda t, i: i % 2 == 0, points=POINTS, ood=lighting,
                   episode_points=EPISODE_POINTS)
        _write_run(study, "grids-16-l0", seed, lambda t, i: True, points=POINTS)  # no fixed grid at L=0: no row
    md = _load().rebuild(study, tmp_path / "none", tmp_path / "RESULTS.md", tmp_path / "figures", n_boot=200, plans=[])
    after = "Success against the fixed grid at the same placement"
    ind = _row(md, "grids-16", after)
    assert ind[1:4] == ["grids-16-fixed", "in distribution", "3"] and ind[4].startswith("+45.0 [")
    assert ind[5] == "better than the fixed grid"
    assert "| grids-16 | grids-16-fixed | lighting:0.8 | 2 | +0.0 [" in md  # the same outcomes under lighting
    assert "| grids-16-l0 | grids-16-l0-fixed" not in md and "| grids-16-fixed | grids-16-fixed" not in md
    looks = _row(md, "grids-16", "Do the predicted points lie on the task more often")
    assert looks[1:8] == ["agentview", "in distribution", "3", "+0.200 [+0.200, +0.200]", "+0.000 [+0.000, +0.000]",
                          "-0.050 [-0.050, -0.050] on s0, s1", "more often than the fixed grid"]
    assert "| grids-16-fixed | agentview | in distribution" not in md  # a fixed grid has nothing to set against
