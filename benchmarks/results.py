"""Rebuild ``benchmarks/RESULTS.md`` and its plots from the committed run folders of the LIBERO study.

    python benchmarks/results.py --study benchmarks/libero/study --archive benchmarks/libero/success \\
        --out benchmarks/RESULTS.md --figures benchmarks/figures

Reads files only: no simulator, no training. A run is the folder ``STUDY/<suite>/<variant>_s<seed>/`` with
``results.json`` / ``episodes.jsonl`` (in-distribution evaluation), ``train_config.json`` (``{"train", "model"}``),
``data.json`` (the demos' fingerprint) and ``ood/<name>/results.json`` / ``episodes.jsonl`` per out-of-distribution
evaluation. What a variant is (K, reducer, ablation, placement) is read from the model config in its
``train_config.json``, not from its name. The archive (``ARCHIVE/<variant>_s<seed>/``, runs evaluated before the
gripper-reset fix) gets a table of its own and is never pooled with the study.

Statistics (``grids_vla.experiments.stats``): Wilson intervals per pooled success rate; against a reference variant,
the difference of pooled rates with a 95 % interval from :func:`seed_bootstrap_diff` (seeds, then episodes; paired
by seed, task and init state when both runs hold the same episodes) and an exact McNemar test per seed and on the
discordant pairs pooled over seeds. A verdict says "better" or "worse" only when the interval excludes 0.

The output is deterministic (bootstrap seeds derived from the comparison's name, dates only from the run files), so
``tests/test_results_rebuild.py`` can compare the committed file byte for byte. Missing runs read "not yet
measured"; a plot without data is skipped (and its old file removed) with a line saying so.

The same command rebuilds the generated section of ``benchmarks/so101/RESULTS.md`` (between its ``BEGIN policies``
and ``END policies`` lines; the rest of that file is written by hand) from the SO-101 study's runs, archived by
``benchmarks/libero/success.py --plan benchmarks/so101/study.json`` in the same layout under the plan's ``archive``:
dense vs each variant in distribution and on the OOD scenes, beside the paper's real-robot numbers. Last, the
README's generated section (``BEGIN results`` / ``END results``) gets a summary read from both files' tables.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grids_vla.envs.libero.dataset import demo_set
from grids_vla.experiments.points import RADIUS_FRACTION
from grids_vla.experiments.stats import (
    mcnemar_exact,
    mcnemar_pooled,
    seed_bootstrap_diff,
    seed_bootstrap_mean,
    wilson_interval,
)

REPO = Path(__file__).resolve().parents[1]
MAIN_SUITE = "libero_object"
N_BOOT = 2000
#: A loss smaller than this (in success-rate points) counts as "no loss" for the paper's claims that GridS keeps the
#: dense policy's success: fixed in this script before any of the study's runs were in.
MARGIN_PP = 5.0

# ---------------------------------------------------------------------------------------- the paper's numbers
# "See What Matters: Differentiable Grid Sample Pruning for Generalizable VLA Models" (ICML 2026, arXiv 2605.11817).
# LIBERO success (%) per suite, visual tokens per image and the paper's FLOPs (G; its accounting, see
# benchmarks/flops/RESULTS.md); the real-robot ablations (SO100 arm, K=16, pp of success against full GridS) and the
# real-robot headline numbers.
PAPER: dict[str, Any] = {
    "libero": {  # model: (tokens, GFLOPs or None, spatial, object, goal, long, avg)
        "pi0": (256, 216.01, 97.2, 98.8, 96.0, 85.6, 94.4),
        "pi0 + FastV": (100, 143.59, 97.0, 98.4, 93.8, 82.4, 92.9),
        "pi0 + SparseVLM": (100, 150.30, 93.4, 98.0, 91.2, 76.6, 89.8),
        "pi0 + VLA-Cache": (256, 188.12, 95.2, 97.6, 96.6, 85.6, 93.8),
        "pi0 + GridS K=16": (16, 51.65, 98.0, 99.2, 96.4, 90.2, 96.0),
        "pi0 + GridS K=4": (4, 43.61, 96.6, 99.4, 96.4, 89.6, 95.5),
        "pi0.5": (256, 249.76, 98.4, 98.0, 97.6, 92.8, 96.7),
        "pi0.5 + GridS K=16": (16, 83.84, 98.6, 98.8, 98.4, 95.2, 97.7),
        "pi0.5 + GridS K=4": (4, 75.73, 97.4, 99.0, 97.4, 92.8, 96.7),
        "pi0.5 + GridS K=1": (1, None, 98.0, 99.0, 97.6, 91.8, 96.6),
        # other rows of the same table: only the average is given
        "OpenVLA": (256, 1956.19, None, None, None, None, 76.5),
        "SmolVLA": (64, 306.78, None, None, None, None, 79.0),
        "OpenVLA-OFT": (512, 3922.56, None, None, None, None, 94.8),
    },
    "suites": ("libero_spatial", "libero_object", "libero_goal", "libero_10"),
    "ablations_pp": {"random coordinates": -15.3, "no geometry injection": -8.7, "discrete (nearest) sampling": -6.2},
    "real_robot": {"success_pp": 22.2, "ood_distractors_pp": 28.6, "ood_scenes": 21, "speedup": 1.23},
}

# ------------------------------------------------------------------------------------------------ the plan
# The study's plan is read from its plan files (benchmarks/libero/study*.json, what benchmarks/libero/success.py
# --plan runs): per suite, the variants, how many seeds each should get, and whether it only runs as compute allows
# (a stage named "extra"). This copy is used only when no plan file can be read.
PLAN: dict[str, dict[str, tuple[int, bool]]] = {
    "libero_object": {
        "dense": (5, False), "grids-16": (5, False), "grids-16-l0": (5, False), "grids-4": (3, False),
        "grids-1": (3, False), "grids-16-fixed": (3, False), "grids-16-random": (3, False),
        "grids-16-nogeom": (3, False), "grids-16-nearest": (3, False), "topk-16": (3, False),
        "tokenlearner-16": (3, False), "perceiver-16": (3, False), "grids-16-attn": (3, False),
        "grids-16-film": (3, False), "grids-64": (3, True), "pool-16": (3, True), "tome-16": (3, True),
        "random-16": (3, True), "fastv-50": (3, True),
    },
    "libero_spatial": {"dense": (3, False), "grids-16": (3, False)},
}
_OOD_SET = ("lighting:0.8, camera_shift:1.0, table_color:0.8, distractors:1.0 (the project's perturbations), "
            "pro:swap (LIBERO-PRO), liberoplus:camera, liberoplus:noise, liberoplus:layout (LIBERO-plus)")
OOD_PLANNED = {
    "libero_object": f"{_OOD_SET} on dense, GridS-16 and GridS-16 at L=0, seeds 0-2, 5 episodes per task on the "
                     "in-distribution checkpoints",
    "libero_spatial": f"{_OOD_SET} on dense and GridS-16, seeds 0-2, 5 episodes per task",
}
#: Keys read, where present, from a run's files to say when and on what it ran.
RECORDED = ("date", "started", "finished", "hardware", "machine", "cpu", "gpu", "device", "torch", "python")
FIGURES = ("success_vs_k.png", "success_vs_flops.png", "ablations.png", "peers.png", "ood_heatmap*.png")
RUN_RE = re.compile(r"^(?P<variant>.+)_s(?P<seed>\d+)$")
ABLATIONS = (  # (reducer_kwargs item, label, paper's delta in pp or None)
    (("coords", "random"), "random coordinates", PAPER["ablations_pp"]["random coordinates"]),
    (("geometry", False), "no geometry injection", PAPER["ablations_pp"]["no geometry injection"]),
    (("sampling", "nearest"), "discrete (nearest) sampling", PAPER["ablations_pp"]["discrete (nearest) sampling"]),
    (("coords", "fixed-grid"), "fixed grid (no learned points)", None),
)
NOT_YET = "not yet measured"


# ------------------------------------------------------------------------------------------------ reading runs
@dataclass
class Evaluation:
    results: dict[str, Any]
    episodes: dict[tuple[int, int], bool]
    points: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # each episode's points summary

    @property
    def successes(self) -> int:
        return sum(self.episodes.values())

    @property
    def n(self) -> int:
        return len(self.episodes)


@dataclass
class Run:
    suite: str
    variant: str
    seed: int
    folder: str  # shown in the report: relative to the study (or archive) root
    ind: Evaluation | None
    complete: bool
    train: dict[str, Any] | None
    model: dict[str, Any] | None
    data: dict[str, Any] | None
    recorded: dict[str, str]
    ood: dict[str, Evaluation] = field(default_factory=dict)
    train_speed: float | None = None  # samples/s over the logged steps of metrics.csv


def _train_speed(metrics: Path, batch_size: Any, skip: int = 20) -> float | None:
    """Samples/s between consecutive logged steps, leaving out the first ``skip`` logs after each (re)start
    (``elapsed_s`` starts again from 0 when a run resumes)."""
    if not metrics.is_file() or not isinstance(batch_size, int):
        return None
    steps = seconds = 0.0
    since, prev = 0, None
    for line in metrics.read_text().splitlines()[1:]:
        cells = line.split(",")
        try:
            step, elapsed = int(cells[0]), float(cells[5])
        except (IndexError, ValueError):
            continue
        if prev is not None and elapsed > prev[1] and step > prev[0]:
            since += 1
            if since > skip:
                steps, seconds = steps + (step - prev[0]), seconds + (elapsed - prev[1])
        else:
            since = 0
        prev = (step, elapsed)
    return steps * batch_size / seconds if seconds > 0 else None


def _json(path: Path) -> Any:
    """The file's JSON; ``None`` when it is missing or unreadable (e.g. cut short: the run counts as unfinished)."""
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def _episodes(path: Path) -> tuple[dict[tuple[int, int], bool], dict[tuple[int, int], dict[str, Any]]]:
    """Outcomes and points summaries by ``(task_id, init_state)``; a last line cut short by a kill is dropped, a
    repeated episode is an error (it would be counted twice)."""
    out: dict[tuple[int, int], bool] = {}
    points: dict[tuple[int, int], dict[str, Any]] = {}
    if not path.is_file():
        return out, points
    for line in path.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            break
        key = (int(e["task_id"]), int(e["init_state"]))
        if key in out:
            raise SystemExit(f"{path}: episode task {key[0]} init state {key[1]} appears twice")
        out[key] = bool(e["success"])
        if e.get("points"):
            points[key] = e["points"]
    return out, points


def _evaluation(folder: Path) -> Evaluation | None:
    res = _json(folder / "results.json")
    return None if res is None else Evaluation(res, *_episodes(folder / "episodes.jsonl"))


def _recorded(*dicts: Any) -> dict[str, str]:
    out = {}
    for d in dicts:
        if isinstance(d, dict):
            for key in RECORDED:
                if key in d and not isinstance(d[key], dict | list) and d[key] is not None and key not in out:
                    out[key] = str(d[key])
    return out


def _run(folder: Path, suite: str | None, shown: str) -> Run | None:
    m = RUN_RE.match(folder.name)
    if not m or not folder.is_dir():
        return None
    ind = _evaluation(folder)
    cfg = _json(folder / "train_config.json") or {}
    data = _json(folder / "data.json")
    res = ind.results if ind else {}
    if suite is None:
        suite = res.get("run", {}).get("suite")
        if suite is None:
            return None
    complete = bool(ind and res.get("complete") and ind.n == res.get("overall", {}).get("episodes"))
    run = Run(suite=suite, variant=m["variant"], seed=int(m["seed"]), folder=shown, ind=ind, complete=complete,
              train=cfg.get("train"), model=cfg.get("model"), data=data,
              recorded=_recorded(res.get("run"), res, cfg, cfg.get("train"), data),
              train_speed=_train_speed(folder / "metrics.csv", (cfg.get("train") or {}).get("batch_size")))
    ood_root = folder / "ood"
    if ood_root.is_dir():
        for sub in sorted(p for p in ood_root.iterdir() if p.is_dir()):
            ev = _evaluation(sub)
            if ev is None or not ev.results.get("complete") or ev.n != ev.results["overall"]["episodes"]:
                continue  # an evaluation still running is left out
            name = ev.results.get("run", {}).get("perturbation") or sub.name
            run.ood[name] = ev
    return run


def load_study(root: Path) -> list[Run]:
    runs = []
    if root.is_dir():
        for suite_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for folder in sorted(suite_dir.iterdir()):
                run = _run(folder, suite_dir.name, f"{suite_dir.name}/{folder.name}")
                if run is not None:
                    runs.append(run)
    return runs


def load_archive(root: Path) -> list[Run]:
    runs = []
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            run = _run(folder, None, folder.name)
            if run is not None:
                runs.append(run)
    return runs


# ------------------------------------------------------------------------------------------ what a variant is
def role(model: dict[str, Any] | None) -> tuple[str, Any]:
    """What a model config is, from its fields: ``("dense", None)``, ``("fastv", keep)``, ``("grids", K)`` (the
    paper's GridS: pooled predictor after the encoder, no options), ``("ablation", label)``, ``("placement", L)``,
    ``("grids-other", description)``, ``("peer", reducer)`` or ``("unknown", None)``."""
    if not model:
        return "unknown", None
    reducer = model.get("reducer")
    if reducer == "dense":
        return ("fastv", model.get("fastv_keep")) if model.get("fastv_keep") else ("dense", None)
    if reducer != "grids":
        return "peer", reducer
    kw = model.get("reducer_kwargs") or {}
    plain = model.get("predictor", "pooled") == "pooled" and not model.get("cond_on_language")
    after = model.get("after_layer")
    if plain and after is None and not kw:
        return "grids", model.get("k")
    if plain and after is None and len(kw) == 1:
        for (key, value), label, _ in ABLATIONS:
            if key in kw and kw[key] == value:
                return "ablation", label
    if plain and not kw and after is not None:
        return "placement", after
    parts = [f"{model.get('predictor')} predictor" if model.get("predictor", "pooled") != "pooled" else "",
             _conditioning(model, kw) if model.get("cond_on_language") else "",
             "points read the stem's tokens" if model.get("point_features", "map") == "stem" else "",
             f"inside the encoder (L={after})" if after is not None else "",
             ", ".join(f"{k}={v}" for k, v in sorted(kw.items()))]
    return "grids-other", "; ".join(p for p in parts if p)


def placement(model: dict[str, Any] | None) -> tuple[Any, Any]:
    """Where a reducer sits and how many tokens it keeps: ``(k, after_layer)`` (``after_layer`` None: after the
    encoder)."""
    return (model or {}).get("k"), (model or {}).get("after_layer")


def _coords(model: dict[str, Any] | None) -> Any:
    """GridS's ``coords`` mode of a run's model; None: predicted (GridSampler's default)."""
    return ((model or {}).get("reducer_kwargs") or {}).get("coords")


def _episode_diffs(evs: dict[int, Evaluation], cam: str, key: str, base: str) -> dict[int, list[tuple[float, float]]]:
    """Per seed, each episode's ``(policy's key - baseline's key, policy calls)`` for one camera, from the episodes'
    points records; seeds none of whose episodes hold both numbers are left out."""
    out = {}
    for seed, ev in evs.items():
        pairs = [(c["policy"][key] - c[base][key], c["frames"]) for c in (rec.get(cam) for rec in ev.points.values())
                 if c and c["frames"] and c["policy"].get(key) is not None and (c.get(base) or {}).get(key) is not None]
        if pairs:
            out[seed] = pairs
    return out


def _conditioning(model: dict[str, Any], kw: dict[str, Any]) -> str:
    """How an instruction-conditioned GridS reads the instruction: the attention head adds it to its queries, the
    pooled head takes it by FiLM or concatenation (``cond_mode``)."""
    if model.get("predictor", "pooled") == "attention":
        return "instruction added to the point queries"
    return f"instruction-conditioned ({'FiLM' if kw.get('cond_mode', 'film') == 'film' else 'concatenated'})"


def tokens_per_camera(model: dict[str, Any] | None) -> int | None:
    if not model:
        return None
    if model.get("reducer") == "dense":
        return (model.get("image_size", 128) // model.get("patch_size", 8)) ** 2
    return model.get("k")


@functools.lru_cache(maxsize=64)
def _gflops(model_json: str) -> float | str:
    """GFLOPs of one batch-1 ``predict_action`` call of the policy a config describes (random weights; matmuls and
    convolutions, attention included: counted with PyTorch's math attention so its matmuls are seen), or why not."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from grids_vla.flops.counter import count_flops
    from grids_vla.policy.configuration_grids_vla import GridSVLAConfig
    from grids_vla.policy.modeling_grids_vla import GridSVLAPolicy

    model = json.loads(model_json)
    if model.get("language", "learned") != "learned":
        return f"not counted (language {model.get('language')!r} needs its encoder)"
    try:
        cfg = GridSVLAConfig.from_dict(model)
        torch.manual_seed(0)
        policy = GridSVLAPolicy(cfg).eval().requires_grad_(False)
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        return f"not counted ({str(e).splitlines()[0]})"
    batch: dict[str, Any] = {cam: torch.zeros(1, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8)
                             for cam in cfg.cameras}
    batch["state"] = torch.zeros(1, cfg.state_dim)
    batch["instruction"] = [cfg.instructions[0] if cfg.instructions else "pick up the object"]
    with sdpa_kernel(SDPBackend.MATH):
        return count_flops(policy.predict_action, batch) / 1e9


def gflops(model: dict[str, Any] | None) -> float | str:
    if not model:
        return "not counted (no train_config.json)"
    return _gflops(json.dumps(model, sort_keys=True))


# ----------------------------------------------------------------------------------------------- statistics
@dataclass
class Variant:
    name: str
    runs: list[Run]  # complete in-distribution evaluations, by seed

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def successes(self) -> int:
        return sum(r.ind.successes for r in self.runs)

    @property
    def n(self) -> int:
        return sum(r.ind.n for r in self.runs)

    @property
    def model(self) -> dict[str, Any] | None:
        return self.runs[0].model

    def outcomes(self, perturbation: str | None = None) -> dict[int, dict[tuple[int, int], bool]]:
        if perturbation is None:
            return {r.seed: r.ind.episodes for r in self.runs}
        return {r.seed: r.ood[perturbation].episodes for r in self.runs if perturbation in r.ood}


@dataclass
class Comparison:
    diff: float
    lo: float
    hi: float
    paired: bool
    seeds: list[int]  # the seeds compared (paired: those both have; unpaired: either has)
    per_seed: dict[int, tuple[dict[str, int], float]]
    pooled: tuple[dict[str, int], float] | None
    n_seeds: int  # seeds behind the side with fewer


def compare(a: dict[int, dict[tuple[int, int], bool]], b: dict[int, dict[tuple[int, int], bool]], tag: str,
            n_boot: int) -> Comparison | None:
    """``a - b``: paired on the seeds both have when each of those holds the same episodes, else unpaired."""
    a = {s: e for s, e in a.items() if e}
    b = {s: e for s, e in b.items() if e}
    if not a or not b:
        return None
    common = sorted(set(a) & set(b))
    rng_seed = zlib.crc32(tag.encode())
    if common and all(a[s].keys() == b[s].keys() for s in common):
        xa = {s: [a[s][k] for k in sorted(a[s])] for s in common}
        xb = {s: [b[s][k] for k in sorted(a[s])] for s in common}
        per_seed = {}
        for s in common:
            c = {"both": sum(x and y for x, y in zip(xa[s], xb[s])),
                 "only_a": sum(x and not y for x, y in zip(xa[s], xb[s])),
                 "only_b": sum(y and not x for x, y in zip(xa[s], xb[s])),
                 "neither": sum(not (x or y) for x, y in zip(xa[s], xb[s]))}
            per_seed[s] = (c, mcnemar_exact(c["only_a"], c["only_b"]))
        diff, lo, hi = seed_bootstrap_diff(xa, xb, True, n_boot=n_boot, rng_seed=rng_seed)
        return Comparison(diff, lo, hi, True, common, per_seed, mcnemar_pooled(c for c, _ in per_seed.values()),
                          len(common))
    xa = {s: list(e.values()) for s, e in a.items()}
    xb = {s: list(e.values()) for s, e in b.items()}
    diff, lo, hi = seed_bootstrap_diff(xa, xb, False, n_boot=n_boot, rng_seed=rng_seed)
    return Comparison(diff, lo, hi, False, sorted(set(a) | set(b)), {}, None, min(len(a), len(b)))


def verdict(c: Comparison | None, ref: str) -> str:
    if c is None:
        return NOT_YET
    if c.lo > 0:
        words = f"better than {ref}"
    elif c.hi < 0:
        words = f"worse than {ref}"
    else:
        words = "no detectable difference"
    if c.n_seeds < 2:
        words += " (1 seed: seed-to-seed spread not captured)"
    return words


def effect_cells(c: Comparison | None, paper_pp: float, paper: str) -> list[str]:
    """``[paper, ours, mark]`` for a claimed effect of ``paper_pp`` points: reproduced when our interval excludes 0
    on the paper's side."""
    if c is None:
        return [paper, NOT_YET, NOT_YET]
    x = paper_pp / 100
    if (c.lo > 0 and x > 0) or (c.hi < 0 and x < 0):
        size = "its size too" if c.lo <= x <= c.hi else "the direction; the paper's size lies outside"
        mark = f"reproduced ({size})"
    elif (c.lo > 0 and x < 0) or (c.hi < 0 and x > 0):
        mark = "not reproduced (the opposite direction)"
    elif not c.lo <= x <= c.hi:
        mark = "not reproduced (the interval excludes the paper's value)"
    else:
        mark = "inconclusive (the interval holds 0 and the paper's value)"
    return [paper, f"{interval_pp(c)} pp over {c.n_seeds} seed(s)", mark]


# ----------------------------------------------------------------------------------------------- formatting
def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def pp(x: float) -> str:
    v = round(100 * x, 1)
    return f"{v + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


def interval_pp(c: Comparison) -> str:
    return f"{pp(c.diff)} [{pp(c.lo)}, {pp(c.hi)}]"


def wilson_cell(s: int, n: int) -> str:
    lo, hi = wilson_interval(s, n)
    return f"{100 * lo:.0f}-{100 * hi:.0f} %"


def pvalue(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def success_cell(s: int, n: int) -> str:
    return f"{s}/{n} = {pct(s / n)} %"


def _points_cells(summaries: list[dict]) -> list[str]:
    """Mobility (within, across episodes) and the near / on shares of the points, the fixed grid and random points,
    averaged over ``summaries`` (one camera's ``points`` entry of each evaluation's results.json)."""
    def mean(values: list[float | None], digits: int) -> str:
        vals = [x for x in values if x is not None]
        return f"{sum(vals) / len(vals):.{digits}f}" if vals else "-"
    return [mean([c.get("within_episode") for c in summaries], 4),
            mean([c.get("across_episodes") for c in summaries], 4),
            *(mean([c.get(kind, {}).get(key) for c in summaries], 3)
              for key in ("within_radius", "on_mask") for kind in ("policy", "fixed-grid", "random"))]


def demo_sets(data: list[dict | None]) -> str:
    """The runs' demonstrations (``data.json`` each): every generation's size and actions digest with its run count,
    flagged when the runs were trained on more than one demo set, or said to be regenerations of one scene set
    (:func:`~grids_vla.envs.libero.dataset.demo_set`)."""
    shown = [f"{d.get('demos')} demos / {d.get('frames')} frames / actions sha256 {str(d.get('actions_sha256'))[:12]}"
             if d else "no data.json" for d in data]
    sets = {demo_set(d) if d else None for d in data}
    if len(sets) > 1:
        return distinct(shown) + " **(more than one demo set: these runs were not trained on the same data)**"
    if len(set(shown)) > 1:
        return distinct(shown) + (" (regenerations of one scene set by the same command on other machines: the same "
                                  "scenes and tasks, the scripted expert's actions differ in floating point)")
    return distinct(shown)


def distinct(values: list[Any]) -> str:
    """``"3000 (all 12 runs)"`` or ``"3000 (10 runs), 1500 (2 runs)"``, in order of first appearance."""
    counts: dict[str, int] = {}
    for v in values:
        key = "-" if v is None else str(v)
        counts[key] = counts.get(key, 0) + 1
    if len(counts) == 1:
        (key, n), = counts.items()
        return f"{key} (all {n} runs)" if n > 1 else key
    return ", ".join(f"{k} ({n} run{'s' if n > 1 else ''})" for k, n in counts.items())


def _settings(fields: dict) -> str:
    """A plan's ``{field: value}`` as the flags that set them, e.g. ``--vision-stem coordconv``."""
    return " ".join(f"`--{k.replace('_', '-')} {v}`" for k, v in fields.items())


def shown_path(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it, else only its name (so no local
    path ever lands in the report)."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return path.name


def table(head: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(head) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(head) + " |", "|" + "|".join(sep) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def _order(names: set[str], plan: dict[str, Any]) -> list[str]:
    """The plan's variants in its order, then the others by name."""
    return [n for n in plan if n in names] + sorted(names - set(plan))


# ---------------------------------------------------------------------------------------------------- plots
class Figures:
    """Writes the plots into one folder; remembers which ones it wrote (the rest are removed at the end)."""

    def __init__(self, folder: Path, report: Path) -> None:
        self.folder = folder
        self.link = Path(os.path.relpath(folder.resolve(), report.resolve().parent)).as_posix()
        self.written: set[str] = set()
        self.plt: Any = None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            self.plt = plt
        except ImportError:
            pass

    def save(self, fig: Any, name: str) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(self.folder / name, dpi=110, metadata={"Software": None})
        self.plt.close(fig)
        self.written.add(name)
        return f"![{name}]({self.link}/{name})"

    def skipped(self, name: str, why: str) -> str:
        if self.plt is None:
            why = "matplotlib is not installed"
        return f"Plot `{name}` skipped: {why}."

    def finish(self) -> None:
        for pattern in FIGURES:
            for path in sorted(self.folder.glob(pattern)) if self.folder.is_dir() else []:
                if path.name not in self.written:
                    path.unlink()


# ------------------------------------------------------------------------------------------------ the report
class Report:
    def __init__(self, study: list[Run], archive: list[Run], figures: Figures, n_boot: int,
                 study_shown: str, archive_shown: str, plans: tuple[dict, dict, list[str]]) -> None:
        self.study, self.archive, self.fig, self.n_boot = study, archive, figures, n_boot
        self.study_shown, self.archive_shown = study_shown, archive_shown
        self.plan, self.ood_plan, self.plan_files = plans
        self.suites = sorted({r.suite for r in study} | set(self.plan), key=lambda s: (s != MAIN_SUITE, s))
        self.variants = {s: self._variants([r for r in study if r.suite == s], self.plan.get(s, {}))
                         for s in self.suites}
        self._cache: dict[str, Comparison | None] = {}

    @staticmethod
    def _variants(runs: list[Run], plan: dict[str, Any]) -> dict[str, Variant]:
        """Complete runs by variant, variants in the plan's order (then the presets', then by name)."""
        out: dict[str, Variant] = {}
        for r in sorted(runs, key=lambda r: (r.variant, r.seed)):
            if r.complete:
                out.setdefault(r.variant, Variant(r.variant, [])).runs.append(r)
        return {n: out[n] for n in _order(set(out), plan)}

    def cmp(self, suite: str, a: str, b: str, perturbation: str | None = None) -> Comparison | None:
        tag = f"{suite}|{a}|{b}|{perturbation or ''}"
        if tag not in self._cache:
            va, vb = self.variants[suite].get(a), self.variants[suite].get(b)
            self._cache[tag] = (compare(va.outcomes(perturbation), vb.outcomes(perturbation), tag, self.n_boot)
                                if va and vb else None)
        return self._cache[tag]

    def find(self, suite: str, kind: str, value: Any = None) -> str | None:
        """The first variant of ``suite`` whose model config has this role (``value`` None: any)."""
        for name, v in self.variants[suite].items():
            k, val = role(v.model)
            if k == kind and (value is None or val == value):
                return name
        return None

    # ------------------------------------------------------------------------------------------- sections
    def build(self) -> str:
        lines = self.header() + self.protocol() + self.main_table(MAIN_SUITE) + self.vs_k() + self.vs_flops() \
            + self.ablations() + self.peers() + self.ood() + self.points()
        for suite in self.suites:
            if suite != MAIN_SUITE:
                lines += [f"## Second suite: {suite}", ""] + self.main_table(suite, heading=False)
                if self.variants[suite]:
                    lines += self.ood(suite, "###") + self.points(suite, "###")
        lines += self.archived() + self.claims()
        self.fig.finish()
        return "\n".join(lines).rstrip("\n") + "\n"

    def header(self) -> list[str]:
        return [
            "# GridS on LIBERO: the evidence",
            "",
            f"Rebuilt by `python benchmarks/results.py` from the committed run folders under `{self.study_shown}/` "
            f"(and, in a table of its own, the archive `{self.archive_shown}/`); every number below is computed from "
            "those files, nothing is typed in. Do not edit by hand: `tests/test_results_rebuild.py` rebuilds this "
            "file and fails when it differs.",
            "",
            ("The plan (variants, seeds, out-of-distribution set) comes from "
             + ", ".join(f"`{x}`" for x in self.plan_files) + "." if self.plan_files
             else "No study plan file was found; the plan shown is the copy in `benchmarks/results.py`."),
            "",
            "How to read the statistics. *Success* pools every complete evaluation of a variant over its seeds, with "
            "a 95 % Wilson interval that treats episodes as independent (it describes the seeds that were run). "
            "*Δ* is a difference of pooled success rates in percentage points with a 95 % interval from a "
            f"two-stage bootstrap ({self.n_boot} resamples; training seeds with replacement, then the episodes of "
            "each drawn seed; episode pairs of the same seed, task and init state resampled jointly), so it widens "
            "when seeds disagree. *p* is an exact McNemar test on the discordant episode pairs pooled over the "
            "seeds both variants have; it treats those episodes as one sample, so it can be small where the "
            "seed-aware interval still holds 0. A verdict follows the interval: *better* or *worse* only when it "
            "excludes 0; "
            "otherwise *no detectable difference*, and the interval's ends say which differences are still "
            "possible.",
            "",
        ]

    def protocol(self) -> list[str]:
        lines = ["## Protocol and hardware (from the run files)", ""]
        if not self.study:
            return lines + [f"No run folders under `{self.study_shown}/` yet: {NOT_YET}.", ""]
        for suite in self.suites:
            runs = [r for r in self.study if r.suite == suite]
            if not runs:
                lines += [f"- **{suite}**: no runs yet ({NOT_YET}).", ""]
                continue
            done = [r for r in runs if r.complete]
            busy = [r.folder.split("/")[-1] for r in runs if not r.complete]
            tr = [r.train or {} for r in runs]
            res = [(r.ind.results.get("run", {}) if r.ind else {}) for r in runs]
            procs = [f"{x.get('workers', 1)}x{x.get('threads')}" for x in res]
            devices = [((r.ind.results.get("latency_ms") or {}).get("device") if r.ind else None) for r in runs]
            inits = [f"{min(k[1] for k in r.ind.episodes)}-{max(k[1] for k in r.ind.episodes)}"
                     if r.ind and r.ind.episodes else "-" for r in runs]
            lines += [
                f"- **{suite}**: {len(runs)} run folders, {len(done)} with a complete evaluation"
                + (f"; still running or incomplete: {', '.join(busy)}" if busy else "") + ".",
                f"  - training: steps {distinct([t.get('steps') for t in tr])}; batch "
                f"{distinct([t.get('batch_size') for t in tr])}; lr {distinct([t.get('lr') for t in tr])}; warm-up "
                f"{distinct([t.get('warmup_steps') for t in tr])}; augmentation shift "
                f"{distinct([t.get('shift') for t in tr])} px, colour jitter "
                f"{distinct([t.get('color_jitter') for t in tr])}.",
                f"  - demonstrations: {demo_sets([r.data for r in runs])}.",
                f"  - evaluation: episodes per task {distinct([x.get('episodes_per_task') for x in res])}, init "
                f"states {distinct(inits)}, tasks {distinct([len(x.get('tasks', [])) for x in res])}, step limit "
                f"{distinct([x.get('max_steps') for x in res])}, actions executed per chunk "
                f"{distinct([x.get('execute') for x in res])}, image size "
                f"{distinct([x.get('image_size') for x in res])} px, cameras "
                f"{distinct(['+'.join(x.get('cameras', [])) for x in res])}, processes x threads "
                f"{distinct(procs)}, policy on {distinct(devices)}.",
            ]
            rec: dict[str, list[str]] = {}
            for r in runs:
                for k, v in r.recorded.items():
                    rec.setdefault(k, []).append(v)
            if rec:
                lines.append("  - recorded: " + "; ".join(f"{k} {distinct(v)}" for k, v in rec.items()) + ".")
            else:
                lines.append("  - no date or hardware recorded in these run files.")
            ood = sorted({p for r in runs for p in r.ood})
            if ood:
                per = [f"{p} ({sum(p in r.ood for r in runs)} runs)" for p in ood]
                lines.append(f"  - out-of-distribution evaluations: {', '.join(per)}.")
            lines.append("")
        return lines

    def main_table(self, suite: str, heading: bool = True) -> list[str]:
        lines = [f"## {suite}: success per variant", ""] if heading else []
        variants = self.variants[suite]
        plan = self.plan.get(suite, {})
        busy: dict[str, list[str]] = {}
        for r in self.study:
            if r.suite == suite and not r.complete:
                busy.setdefault(r.variant, []).append(f"s{r.seed}")
        names = _order(set(variants) | set(plan) | set(busy), plan)
        dense = self.find(suite, "dense")
        if not variants:
            return lines + [f"No complete evaluation on {suite} yet: {NOT_YET}. Planned: "
                            + ", ".join(f"{n} ({plan[n][0]} seeds{', as compute allows' if plan[n][1] else ''})"
                                        for n in plan) + ".", ""]
        rows = []
        for name in names:
            want = plan.get(name, (None, False))
            planned = f"/{want[0]}" if want[0] else ""
            v = variants.get(name)
            if v is None:
                state = (f"in progress ({', '.join(busy[name])})" if name in busy
                         else NOT_YET + (" (as compute allows)" if want[1] else ""))
                rows.append([name, "-", f"0{planned}", state, "", "", "", "", ""])
                continue
            c = self.cmp(suite, name, dense) if dense and name != dense else None
            per_seed = ", ".join(f"s{r.seed}: {r.ind.successes}/{r.ind.n}" for r in v.runs)
            on = (f" on {', '.join(f's{x}' for x in c.seeds)}"  # when dense's pooled row holds other seeds
                  if c and c.paired and c.seeds != variants[dense].seeds else "")
            rows.append([name, str(tokens_per_camera(v.model) or "-"), f"{len(v.runs)}{planned}",
                         success_cell(v.successes, v.n), wilson_cell(v.successes, v.n), per_seed,
                         "reference" if name == dense else (interval_pp(c) + on if c else "-"),
                         pvalue(c.pooled[1]) if c and c.pooled else "-",
                         "reference" if name == dense else (verdict(c, "dense") if dense else "no dense run yet")])
        lines += table(["variant", "tokens / camera", "seeds (done/planned)", "success (pooled)", "95 % Wilson",
                        "per seed", "Δ vs dense, pp [95 % seed bootstrap]", "McNemar p (pooled)", "verdict"],
                       rows, "lrrrrlrrl")
        lines.append("")
        paired = [(n, self.cmp(suite, n, dense)) for n in names if dense and n != dense and n in variants]
        paired = [(n, c) for n, c in paired if c and c.paired]
        unpaired = [n for n in names if dense and n != dense and n in variants
                    and (c := self.cmp(suite, n, dense)) is not None and not c.paired]
        if paired:
            lines += ["<details><summary>Paired episodes against dense, seed by seed (McNemar per seed)</summary>",
                      ""]
            rows = [[n, f"s{s}", str(cnt["both"]), str(cnt["only_a"]), str(cnt["only_b"]), str(cnt["neither"]),
                     pvalue(p)] for n, c in paired for s, (cnt, p) in c.per_seed.items()]
            rows += [[n, "pooled", *(str(c.pooled[0][k]) for k in ("both", "only_a", "only_b", "neither")),
                      pvalue(c.pooled[1])] for n, c in paired]
            lines += table(["variant", "seed", "both succeed", "only variant", "only dense", "neither", "p"], rows,
                           "llrrrrr")
            lines += ["", "</details>", ""]
        if unpaired:
            lines += [f"Compared unpaired (no seed of theirs holds the same episodes as dense's): "
                      f"{', '.join(unpaired)}.", ""]
        rows = []
        for v in variants.values():
            for r in v.runs:
                o = r.ind.results.get("overall", {})
                lat = (r.ind.results.get("latency_ms") or {}).get("median")
                speed = r.train_speed
                rows.append([v.name, f"s{r.seed}", success_cell(r.ind.successes, r.ind.n),
                             wilson_cell(r.ind.successes, r.ind.n),
                             "-" if o.get("mean_episode_length") is None else f"{o['mean_episode_length']:.0f}",
                             "-" if lat is None else f"{lat:.2f}", "-" if speed is None else f"{speed:.1f}",
                             f"`{r.folder}`"])
        lines += ["<details><summary>Every run: success with its 95 % Wilson interval, mean episode length, median "
                  "policy latency (batch 1, during evaluation) and training samples/s (whole pipeline, from "
                  "metrics.csv)</summary>", ""]
        lines += table(["variant", "seed", "success", "95 % Wilson", "mean length", "latency ms", "train samples/s",
                        "folder"], rows, "llrrrrrl")
        return lines + ["", "</details>", ""]

    def vs_k(self) -> list[str]:
        suite = MAIN_SUITE
        lines = ["## Success vs K (GridS as the paper specifies it)", ""]
        fam = sorted(((v.model or {}).get("k"), n) for n, v in self.variants[suite].items()
                     if role(v.model)[0] == "grids")
        dense = self.find(suite, "dense")
        inside = [(n, role(v.model)[1]) for n, v in self.variants[suite].items() if role(v.model)[0] == "placement"]
        if not fam:
            return lines + [f"No GridS run with the paper's settings yet: {NOT_YET}.",
                            self.fig.skipped("success_vs_k.png", "no data"), ""]
        rows = []
        for k, n in fam:
            v, c = self.variants[suite][n], self.cmp(suite, n, dense) if dense else None
            rows.append([str(k), n, str(len(v.runs)), success_cell(v.successes, v.n), wilson_cell(v.successes, v.n),
                         interval_pp(c) if c else "-", verdict(c, "dense") if dense else "no dense run yet"])
        lines += table(["K per camera", "variant", "seeds", "success", "95 % Wilson", "Δ vs dense, pp [95 %]",
                        "verdict"], rows, "rlrrrrl") + [""]
        if self.fig.plt is None:
            return lines + [self.fig.skipped("success_vs_k.png", ""), ""]
        plt = self.fig.plt
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ks = [k for k, _ in fam]
        for label, series, marker in (("GridS (paper's settings)", fam, "o"),
                                      *((f"GridS inside the encoder (L={L})", [(self.variants[suite][n].model["k"], n)],
                                         "s") for n, L in inside)):
            xs = [k for k, _ in series]
            ys = [100 * self.variants[suite][n].successes / self.variants[suite][n].n for _, n in series]
            cis = [wilson_interval(self.variants[suite][n].successes, self.variants[suite][n].n) for _, n in series]
            ax.errorbar(xs, ys, yerr=[[y - 100 * c[0] for y, c in zip(ys, cis)], [100 * c[1] - y for y, c in
                                                                                 zip(ys, cis)]],
                        marker=marker, capsize=3, label=label, linestyle="-" if marker == "o" else "none")
            for x, (_, n) in zip(xs, series):
                for r in self.variants[suite][n].runs:
                    ax.plot(x, 100 * r.ind.successes / r.ind.n, ".", color="0.5", alpha=0.6)
        if dense:
            d = self.variants[suite][dense]
            lo, hi = wilson_interval(d.successes, d.n)
            ax.axhline(100 * d.successes / d.n, color="k", linestyle="--",
                       label=f"dense ({tokens_per_camera(d.model)} tokens / camera)")
            ax.axhspan(100 * lo, 100 * hi, color="0.85", zorder=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(ks + [int(v.model["k"]) for n, v in self.variants[suite].items()
                                       if role(v.model)[0] == "placement"])))
        ax.get_xaxis().set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set(xlabel="K (visual tokens per camera)", ylabel="success % (pooled, 95 % Wilson)", ylim=(0, 100),
               title=f"{suite}: success vs K")
        ax.legend(fontsize=7, loc="lower right")
        return lines + [self.fig.save(fig, "success_vs_k.png"), ""]

    def vs_flops(self) -> list[str]:
        suite = MAIN_SUITE
        lines = ["## Success vs end-to-end FLOPs", ""]
        variants = self.variants[suite]
        if not variants:
            return lines + [f"No complete evaluation yet: {NOT_YET}.",
                            self.fig.skipped("success_vs_flops.png", "no data"), ""]
        dense = self.find(suite, "dense")
        flops = {n: gflops(v.model) for n, v in variants.items()}
        ref = flops.get(dense) if dense else None
        rows = []
        for n, v in variants.items():
            f = flops[n]
            rows.append([n, f"{f:.3f}" if isinstance(f, float) else f,
                         f"{f / ref:.2f}x" if isinstance(f, float) and isinstance(ref, float) else "-",
                         success_cell(v.successes, v.n), wilson_cell(v.successes, v.n)])
        lines += ["FLOPs of one policy call at batch 1 (`predict_action`: vision encoder, reducer, language, "
                  "transformer, action head), counted by `grids_vla.flops.count_flops` on a policy built from the "
                  "run's `train_config.json` with random weights; matrix multiplies and convolutions, attention "
                  "included (math attention, so its matmuls are seen). The simulator, the data pipeline and "
                  "elementwise work are not counted.", ""]
        lines += table(["variant", "GFLOPs / call", "vs dense", "success", "95 % Wilson"], rows) + [""]
        counted = [n for n in variants if isinstance(flops[n], float)]
        if self.fig.plt is None or not counted:
            return lines + [self.fig.skipped("success_vs_flops.png", "no FLOPs counted"), ""]
        plt = self.fig.plt
        fig, ax = plt.subplots(figsize=(6, 3.8))
        by_cost = sorted(counted, key=lambda n: flops[n])
        for n in counted:
            v = variants[n]
            y = 100 * v.successes / v.n
            lo, hi = wilson_interval(v.successes, v.n)
            ax.errorbar(flops[n], y, yerr=[[y - 100 * lo], [100 * hi - y]], marker="o", capsize=3,
                        color="k" if n == dense else "tab:blue")
            ax.annotate(n, (flops[n], y), fontsize=6, xytext=(4, 4 if by_cost.index(n) % 2 else -10),
                        textcoords="offset points")  # neighbours in cost alternate above / below
        if dense:
            d = variants[dense]
            ax.axhline(100 * d.successes / d.n, color="k", linestyle="--", label="dense success")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:.2g}"))
        ax.xaxis.set_minor_formatter(plt.FuncFormatter(lambda x, _: f"{x:.2g}"))
        ax.tick_params(axis="x", which="both", labelsize=7)
        ax.set(xlabel="GFLOPs per policy call (batch 1)", ylabel="success % (pooled, 95 % Wilson)", ylim=(0, 100),
               title=f"{suite}: success vs FLOPs")
        return lines + [self.fig.save(fig, "success_vs_flops.png"), ""]

    def ablations(self) -> list[str]:
        suite = MAIN_SUITE
        lines = ["## Ablations at K=16 (against GridS-16)", ""]
        ref = self.find(suite, "grids", 16)
        found = {label: self.find(suite, "ablation", label) for _, label, _ in ABLATIONS}
        lines.append("The paper's deltas are from its real-robot experiment (SO100 arm, SmolVLA); ours are on "
                     f"{suite} in simulation with the compact policy, so only the direction and a rough size can be "
                     "compared.")
        lines.append("")
        rows, bars = [], []
        for _, label, paper in ABLATIONS:
            n = found[label]
            c = self.cmp(suite, n, ref) if n and ref else None
            v = self.variants[suite].get(n) if n else None
            paper_cell = "-" if paper is None else f"{paper:+.1f}"
            if c is None:
                why = NOT_YET if ref or not v else f"{NOT_YET} (no GridS-16 reference run)"
                rows.append([label, n or "-", str(len(v.runs)) if v else "0",
                             success_cell(v.successes, v.n) if v else "-", why, "-", paper_cell, "-"])
                continue
            inside = "-" if paper is None else ("yes" if c.lo <= paper / 100 <= c.hi else "no")
            rows.append([label, n, str(len(v.runs)), success_cell(v.successes, v.n), interval_pp(c),
                         verdict(c, "GridS-16"), paper_cell, inside])
            bars.append((label, c, paper))
        lines += table(["ablation", "variant", "seeds", "success", "Δ vs GridS-16, pp [95 %]", "verdict",
                        "paper Δ, pp (real robot)", "paper's Δ inside our interval"], rows, "llrrrlrl") + [""]
        if not bars or self.fig.plt is None:
            return lines + [self.fig.skipped("ablations.png", "no ablation compared yet"), ""]
        plt = self.fig.plt
        fig, ax = plt.subplots(figsize=(6, 3.4))
        xs = list(range(len(bars)))
        ours = [100 * c.diff for _, c, _ in bars]
        ax.bar([x - 0.2 for x in xs], ours, width=0.4, label=f"ours ({suite}, 95 % seed bootstrap)",
               yerr=[[o - 100 * c.lo for o, (_, c, _) in zip(ours, bars)],
                     [100 * c.hi - o for o, (_, c, _) in zip(ours, bars)]], capsize=3, color="tab:blue")
        ax.bar([x + 0.2 for x in xs], [p if p is not None else 0 for _, _, p in bars], width=0.4,
               label="paper (real robot)", color="white", edgecolor="tab:red", hatch="//")
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_xlim(-0.8, len(bars) - 0.2)
        ax.set_xticks(xs, [label for label, _, _ in bars], fontsize=7)
        ax.set(ylabel="Δ success vs GridS-16 (pp)", title="Ablations at K=16")
        ax.legend(fontsize=7)
        return lines + [self.fig.save(fig, "ablations.png"), ""]

    def peers(self) -> list[str]:
        suite = MAIN_SUITE
        lines = ["## Peers at equal tokens (16 per camera)", ""]
        ref, dense = self.find(suite, "grids", 16), self.find(suite, "dense")
        names = [n for n, v in self.variants[suite].items() if role(v.model)[0] in ("peer", "grids", "placement",
                                                                                    "grids-other")
                 and tokens_per_camera(v.model) == 16]
        if not names:
            return lines + [f"No run at 16 tokens per camera yet: {NOT_YET}.",
                            self.fig.skipped("peers.png", "no data"), ""]
        rows = []
        for n in names:
            v = self.variants[suite][n]
            kind, what = role(v.model)
            c_ref = self.cmp(suite, n, ref) if ref and n != ref else None
            c_dense = self.cmp(suite, n, dense) if dense else None
            rows.append([n, what if kind in ("peer", "grids-other") else ("GridS" if kind == "grids"
                                                                        else f"GridS, L={what}"),
                         str(len(v.runs)), success_cell(v.successes, v.n), wilson_cell(v.successes, v.n),
                         "reference" if n == ref else (interval_pp(c_ref) if c_ref else "-"),
                         "reference" if n == ref else verdict(c_ref, "GridS-16") if ref else "no GridS-16 run yet",
                         interval_pp(c_dense) if c_dense else "-"])
        lines += table(["variant", "reducer", "seeds", "success", "95 % Wilson", "Δ vs GridS-16, pp [95 %]",
                        "verdict", "Δ vs dense, pp [95 %]"], rows, "llrrrrlr") + [""]
        if self.fig.plt is None:
            return lines + [self.fig.skipped("peers.png", ""), ""]
        plt = self.fig.plt
        fig, ax = plt.subplots(figsize=(max(4.0, 1.0 * len(names) + 2), 3.4))
        ys = [100 * self.variants[suite][n].successes / self.variants[suite][n].n for n in names]
        cis = [wilson_interval(self.variants[suite][n].successes, self.variants[suite][n].n) for n in names]
        ax.bar(names, ys, yerr=[[y - 100 * c[0] for y, c in zip(ys, cis)], [100 * c[1] - y for y, c in zip(ys, cis)]],
               capsize=3, color=["tab:blue" if role(self.variants[suite][n].model)[0] != "peer" else "0.6"
                                 for n in names])
        if dense:
            d = self.variants[suite][dense]
            ax.axhline(100 * d.successes / d.n, color="k", linestyle="--", label="dense")
            ax.legend(fontsize=7)
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        ax.set(ylabel="success % (pooled, 95 % Wilson)", ylim=(0, 100), title=f"{suite}: 16 tokens per camera")
        return lines + [self.fig.save(fig, "peers.png"), ""]

    def ood(self, suite: str = MAIN_SUITE, level: str = "##") -> list[str]:
        name = "ood_heatmap.png" if suite == MAIN_SUITE else f"ood_heatmap_{suite}.png"
        lines = [f"{level} Out of distribution" + ("" if suite == MAIN_SUITE else f" ({suite})"), ""]
        if suite in self.ood_plan:
            lines += [f"Planned: {self.ood_plan[suite]}.", ""]
        variants = self.variants[suite]
        perts = sorted({p for v in variants.values() for r in v.runs for p in r.ood})
        if not perts:
            return lines + [f"No out-of-distribution evaluation yet: {NOT_YET}.",
                            self.fig.skipped(name, "no data"), ""]
        dense = self.find(suite, "dense")
        lines += ["*Drop*: success under the perturbation minus in-distribution success of the same checkpoints, "
                  "paired on the same episodes (task, init state) when the perturbation keeps the suite (scene "
                  "perturbations), else against all in-distribution episodes (LIBERO-PRO / LIBERO-plus suites have "
                  "tasks of their own); *Δ vs dense*: both under the same perturbation, on the same episodes.", ""]
        rows, drops = [], {}
        names = [n for n in variants if any(p in r.ood for r in variants[n].runs for p in perts)]
        for p in perts:
            for n in names:
                v = variants[n]
                under = v.outcomes(p)
                if not under:
                    continue
                ind = {s: e for s, e in v.outcomes().items() if s in under}
                suites = {r.seed: (r.ind.results.get("run", {}).get("suite"),
                                   r.ood[p].results.get("run", {}).get("suite")) for r in v.runs if p in r.ood}
                same = {s: {k: ind[s][k] for k in under[s]} for s in under
                        if suites[s][0] == suites[s][1] and set(under[s]) <= set(ind[s])}
                base = same if len(same) == len(under) else ind
                drop = compare(under, base, f"drop|{suite}|{n}|{p}", self.n_boot)
                drops[(n, p)] = drop.diff if drop else None
                s, m = sum(sum(e.values()) for e in under.values()), sum(len(e) for e in under.values())
                c = self.cmp(suite, n, dense, p) if dense and n != dense else None
                rows.append([p, n, str(len(under)), success_cell(s, m),
                             (interval_pp(drop) if drop else "-") + ("" if base is same else " (all ID episodes)"),
                             "reference" if n == dense else (interval_pp(c) if c else "-"),
                             "reference" if n == dense else verdict(c, "dense")])
        lines += table(["perturbation", "variant", "seeds", "success", "drop from in-distribution, pp [95 %]",
                        "Δ vs dense, pp [95 %]", "verdict"], rows, "llrrrrl") + [""]
        if self.fig.plt is None:
            return lines + [self.fig.skipped(name, ""), ""]
        plt = self.fig.plt
        grid = [[float("nan") if drops.get((n, p)) is None else 100 * drops[(n, p)] for p in perts] for n in names]
        fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(perts) + 2.5), 0.45 * len(names) + 1.8))
        span = max([abs(x) for row in grid for x in row if not math.isnan(x)] + [1.0])
        im = ax.imshow(grid, cmap="RdBu", vmin=-span, vmax=span, aspect="auto")
        for i, row in enumerate(grid):
            for j, x in enumerate(row):
                ax.text(j, i, "-" if math.isnan(x) else f"{x:+.0f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(perts)), perts, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        fig.colorbar(im, ax=ax, label="pp")
        ax.set_title(f"{suite}: drop from in-distribution success", fontsize=9)
        return lines + [self.fig.save(fig, name), ""]

    def points(self, suite: str = MAIN_SUITE, level: str = "##") -> list[str]:
        lines = [f"{level} Where the points look (GridS-like runs" + ("" if suite == MAIN_SUITE else f", {suite}")
                 + ")", ""]
        runs = [(n, r) for n, v in self.variants[suite].items() if (v.model or {}).get("reducer") == "grids"
                for r in v.runs]
        with_points = [(n, r) for n, r in runs if r.ind.results.get("points")]
        if not with_points:
            why = "no GridS-like run yet" if not runs else "their results.json hold no points summary"
            return lines + [f"{NOT_YET} ({why}).", ""]
        lines += ["Per camera, averaged over the seeds: mobility (spread of a point within an episode, and of its "
                  "mean position across episodes, in image fractions; ~0 is a fixed pattern) and the share of "
                  f"points within {RADIUS_FRACTION:g} of the image side ({RADIUS_FRACTION * 128:g} px at 128 px) of "
                  "the object to move, the target or the gripper (*near*) or on their "
                  "pixels (*on*), beside the fixed-grid anchors and uniform random points on the same frames. From "
                  "each evaluation's `results.json` (`points`).", ""]
        head = ["moves within", "moves across", "near: points", "fixed grid", "random", "on: points", "fixed grid",
                "random"]
        def camera_rows(before: list[str], evs: list[Evaluation], success: str) -> list[list[str]]:
            """One row per camera over ``evs`` (one variant's evaluations, one per seed)."""
            rows = []
            for cam in dict.fromkeys(c for e in evs for c in e.results["points"]):
                cams = [e.results["points"][cam] for e in evs if cam in e.results["points"]]
                rows.append([*before, cam, str(len(cams)), success, *_points_cells(cams)])
            return rows

        rows = []
        for n in dict.fromkeys(n for n, _ in with_points):
            v = self.variants[suite][n]
            rows += camera_rows([n], [r.ind for m, r in with_points if m == n], pct(v.successes / v.n) + " %")
        lines += table(["variant", "camera", "seeds", "success", *head], rows, "llrrrrrrrrrr") + [""]
        rows = []
        for n, r in with_points:
            for cam, c in r.ind.results["points"].items():
                cells = _points_cells([c])
                rows.append([n, f"s{r.seed}", cam, success_cell(r.ind.successes, r.ind.n), *cells[:3], cells[5]])
        lines += ["<details><summary>Every run</summary>", ""]
        lines += table(["variant", "seed", "camera", "success", "moves within", "moves across", "near", "on"], rows,
                       "lllrrrrr")
        lines += ["", "</details>", ""]
        rows = []
        for p in sorted({p for _, r in runs for p in r.ood if r.ood[p].results.get("points")}):
            for n in dict.fromkeys(n for n, _ in runs):
                evs = [r.ood[p] for m, r in runs if m == n and p in r.ood and r.ood[p].results.get("points")]
                if evs:
                    rows += camera_rows([p, n], evs, success_cell(sum(e.successes for e in evs),
                                                                  sum(e.n for e in evs)))
        if rows:
            lines += ["Out of distribution, the same measures on the frames of each perturbed evaluation (the "
                      "fixed-grid and random columns are on those frames too):", ""]
            lines += table(["perturbation", "variant", "camera", "seeds", "success", *head], rows,
                           "lllrrrrrrrrrr") + [""]
        return lines + self.looks_vs_fixed_grid(suite) + self.vs_fixed_grid(suite)

    def looks_vs_fixed_grid(self, suite: str) -> list[str]:
        """Do predicted points lie on the task more often than the fixed-grid anchors would on the same frames? The
        per-episode difference, weighted by frames, with the seed-then-episode bootstrap, per camera and split."""
        rows = []
        for n, v in self.variants[suite].items():
            if (v.model or {}).get("reducer") != "grids" or _coords(v.model) is not None:
                continue
            splits = [None, *sorted({p for r in v.runs for p in r.ood})]
            for p in splits:
                evs = {r.seed: (r.ind if p is None else r.ood.get(p)) for r in v.runs}
                evs = {s: e for s, e in evs.items() if e is not None and e.points}
                for cam in dict.fromkeys(c for e in evs.values() for rec in e.points.values() for c in rec):
                    found = []  # (interval or None, the seeds' episode differences) per column
                    for key, base in (("on_mask", "fixed-grid"), ("within_radius", "fixed-grid"), ("on_mask", "still")):
                        diffs = _episode_diffs(evs, cam, key, base)
                        found.append((seed_bootstrap_mean(diffs, self.n_boot, zlib.crc32(
                            f"looks|{suite}|{n}|{p}|{cam}|{key}|{base}".encode())) if diffs else None, diffs))
                    first = found[0][0]
                    if first is None and found[1][0] is None:
                        continue
                    words = ("-" if first is None else "more often than the fixed grid" if first[1] > 0
                             else "less often than the fixed grid" if first[2] < 0 else "no detectable difference")
                    if first is not None and len(evs) < 2:
                        words += " (1 seed: seed-to-seed spread not captured)"
                    cells = ["-" if c is None else f"{c[0]:+.3f} [{c[1]:+.3f}, {c[2]:+.3f}]"
                             + ("" if len(d) == len(evs) else " on " + ", ".join(f"s{x}" for x in d)) for c, d in found]
                    rows.append([n, cam, "in distribution" if p is None else p, str(len(evs)), *cells, words])
        if not rows:
            return []
        return ["Do the predicted points lie on the task more often than the fixed-grid anchors would on the same "
                "frames? Per episode, the share of the policy's points on the task's pixels (*on*) or within "
                f"{RADIUS_FRACTION * 128:g} px of a target (*near*) minus the anchors' share, weighted by the "
                "episode's policy calls, pooled over seeds; 95 % seed-then-episode bootstrap. The verdict reads the "
                "first column. The last column sets the points against themselves held still at their mean over "
                "each episode: above 0, their movement within an episode follows the task; evaluations made before "
                "that baseline existed show -.", ""] \
            + table(["variant", "camera", "split", "seeds", "on: points - fixed grid [95 %]",
                     "near: points - fixed grid [95 %]", "on: points - held still [95 %]",
                     "verdict (on vs fixed grid)"], rows, "lllrrrrl") + [""]

    def vs_fixed_grid(self, suite: str) -> list[str]:
        """Do points that move buy success? Each GridS-like variant with predicted points against the fixed grid at
        its placement (same K, same ``after_layer``), in distribution and under every perturbation both have."""
        variants = self.variants[suite]
        fixed = {placement(v.model): n for n, v in variants.items() if _coords(v.model) == "fixed-grid"}
        moving = [(n, fixed[placement(v.model)]) for n, v in variants.items()
                  if (v.model or {}).get("reducer") == "grids" and _coords(v.model) is None
                  and placement(v.model) in fixed]
        if not moving:
            return []
        rows = []
        for n, f in moving:
            perts = sorted({p for r in variants[n].runs for p in r.ood} & {p for r in variants[f].runs for p in r.ood})
            for p in [None, *perts]:
                c = self.cmp(suite, n, f, p)
                rows.append([n, f, "in distribution" if p is None else p, str(c.n_seeds if c else 0),
                             interval_pp(c) if c else "-", verdict(c, "the fixed grid")])
        return ["Success against the fixed grid at the same placement (same K and `after_layer`; the points' "
                "only difference is that they are predicted): Δ in pp with the seed-then-episode bootstrap's 95 % "
                "interval, paired on the same episodes.", ""] \
            + table(["variant", "fixed grid", "split", "seeds", "Δ vs fixed grid, pp [95 %]", "verdict"], rows,
                    "lllrrl") + [""]

    def archived(self) -> list[str]:
        lines = ["## Archived runs evaluated before the gripper-reset fix (not pooled)", "",
                 f"`{self.archive_shown}/`: libero_object runs of 2026-12-01 whose evaluation predates the fix that "
                 "resets the gripper command between episodes. They are shown as a record only and are never pooled "
                 "with the study's runs above.", ""]
        variants = self._variants(self.archive, {})
        if not variants:
            return lines + [f"No archived runs: {NOT_YET}.", ""]
        runs = [r for v in variants.values() for r in v.runs]
        lines += [f"Protocol: steps {distinct([(r.train or {}).get('steps') for r in runs])}, batch "
                  f"{distinct([(r.train or {}).get('batch_size') for r in runs])}, episodes per task "
                  f"{distinct([r.ind.results.get('run', {}).get('episodes_per_task') for r in runs])}, demo frames "
                  f"{distinct([(r.data or {}).get('frames') for r in runs])}.", ""]
        dense = next((n for n, v in variants.items() if role(v.model)[0] == "dense"), None)
        rows = []
        for n, v in variants.items():
            c = (compare(v.outcomes(), variants[dense].outcomes(), f"archive|{n}|{dense}", self.n_boot)
                 if dense and n != dense else None)
            rows.append([n, v.runs[0].suite, str(len(v.runs)), success_cell(v.successes, v.n),
                         wilson_cell(v.successes, v.n),
                         ", ".join(f"s{r.seed}: {r.ind.successes}/{r.ind.n}" for r in v.runs),
                         "reference" if n == dense else (interval_pp(c) if c else "-"),
                         pvalue(c.pooled[1]) if c and c.pooled else "-",
                         "reference" if n == dense else verdict(c, "dense"),
                         ", ".join("-" if r.train_speed is None else f"{r.train_speed:.1f}" for r in v.runs)])
        return lines + table(["variant", "suite", "seeds", "success (pooled)", "95 % Wilson", "per seed",
                              "Δ vs dense, pp [95 % seed bootstrap]", "McNemar p (pooled)", "verdict",
                              "train samples/s per seed"], rows, "llrrrlrrlr") + [""]

    def claims(self) -> list[str]:
        suite, lib = MAIN_SUITE, PAPER["libero"]
        dense, g16 = self.find(suite, "dense"), self.find(suite, "grids", 16)
        lines = ["## The paper's claims beside ours", "",
                 "Marks: *reproduced* / *not reproduced* / *inconclusive* (the interval holds both 0 and the paper's "
                 "value, or a loss above the margin) / *not testable here* (with the reason) / *not yet measured*. "
                 f"A claim that GridS keeps the dense policy's success counts as reproduced when the 95 % interval "
                 f"of Δ vs dense lies above -{MARGIN_PP:g} pp (the margin, fixed in `benchmarks/results.py` before "
                 "the study's runs were in), and as not reproduced when it lies below 0. A claimed effect is "
                 "reproduced when our interval excludes 0 on the paper's side. The paper trains pi0 / pi0.5; the "
                 "study trains this repository's compact policy (about 1.3 M parameters at its default config) on "
                 "the generated demos of the protocol section, so absolute rates are not comparable, only "
                 "differences.", ""]

        def obj(model: str, col: int = 3) -> float:
            return lib[model][col]

        def keeps(c: Comparison | None, paper: str) -> list[str]:
            if c is None:
                return [paper, NOT_YET, NOT_YET]
            if c.hi < 0:
                mark = "not reproduced (worse than dense: the interval excludes 0)"
            elif c.lo > -MARGIN_PP / 100:
                mark = f"reproduced (a loss above {MARGIN_PP:g} pp is excluded)"
            else:
                mark = f"inconclusive (a loss above {MARGIN_PP:g} pp is not excluded)"
            return [paper, f"{interval_pp(c)} pp over {c.n_seeds} seed(s)", mark]

        def effect(c: Comparison | None, paper_pp: float, paper: str) -> list[str]:
            return effect_cells(c, paper_pp, paper)

        def fam(k: int, s: str = suite) -> Comparison | None:
            n = self.find(s, "grids", k)
            d = self.find(s, "dense")
            return self.cmp(s, n, d) if n and d else None

        rows = [
            ["GridS-16 keeps dense success on LIBERO-Object",
             *keeps(fam(16), f"pi0 {obj('pi0')} -> {obj('pi0 + GridS K=16')} "
                             f"({obj('pi0 + GridS K=16') - obj('pi0'):+.1f}); pi0.5 {obj('pi0.5')} -> "
                             f"{obj('pi0.5 + GridS K=16')} ({obj('pi0.5 + GridS K=16') - obj('pi0.5'):+.1f})")],
            ["GridS-4 keeps dense success on LIBERO-Object",
             *keeps(fam(4), f"pi0 {obj('pi0 + GridS K=4') - obj('pi0'):+.1f}; pi0.5 "
                            f"{obj('pi0.5 + GridS K=4') - obj('pi0.5'):+.1f}")],
            ["GridS-1 keeps dense success on LIBERO-Object",
             *keeps(fam(1), f"pi0.5 {obj('pi0.5')} -> {obj('pi0.5 + GridS K=1')} "
                            f"({obj('pi0.5 + GridS K=1') - obj('pi0.5'):+.1f})")],
            ["GridS-16 keeps dense success on LIBERO-Spatial",
             *keeps(fam(16, "libero_spatial"), f"pi0 {obj('pi0', 2)} -> {obj('pi0 + GridS K=16', 2)} "
                                               f"({obj('pi0 + GridS K=16', 2) - obj('pi0', 2):+.1f}); pi0.5 "
                                               f"{obj('pi0.5 + GridS K=16', 2) - obj('pi0.5', 2):+.1f}")],
        ]
        for _, label, paper in ABLATIONS:
            if paper is None:
                continue
            n = self.find(suite, "ablation", label)
            rows.append([f"Ablation: {label} costs success (K=16; paper on a real robot, ours on {suite})",
                         *effect(self.cmp(suite, n, g16) if n and g16 else None, paper,
                                 f"{paper:+.1f} pp vs full GridS")])
        distract = sorted({p for v in self.variants[suite].values() for r in v.runs for p in r.ood
                           if p.startswith("distractors")})
        c = self.cmp(suite, g16, dense, distract[0]) if distract and g16 and dense else None
        rows.append([f"GridS beats dense out of distribution with distractors (paper: real robot; ours: "
                     f"{distract[0] if distract else 'distractors'} on {suite})",
                     *effect(c, PAPER["real_robot"]["ood_distractors_pp"],
                             f"{PAPER['real_robot']['ood_distractors_pp']:+.1f} pp")])
        f_dense = gflops(self.variants[suite][dense].model) if dense else None
        f_g16 = gflops(self.variants[suite][g16].model) if g16 else None
        ours_flops = (f"compact policy here: {100 * (1 - f_g16 / f_dense):.1f} % fewer FLOPs per call at K=16"
                      if isinstance(f_dense, float) and isinstance(f_g16, float) else NOT_YET)
        lat = {}
        for n in (dense, g16):
            if n:
                vals = sorted(x for r in self.variants[suite][n].runs
                              if (x := (r.ind.results.get("latency_ms") or {}).get("median")))
                lat[n] = vals[len(vals) // 2] if vals else None
        ours_lat = (f"CPU, batch 1, during evaluation: {lat[dense] / lat[g16]:.2f}x (median of the runs' median "
                    f"latencies)" if dense and g16 and lat.get(dense) and lat.get(g16) else NOT_YET)
        paper_flops = f"{(1 - lib['pi0 + GridS K=16'][1] / lib['pi0'][1]) * 100:.1f}"
        rows += [
            ["FLOPs cut at K=16 (pi0, the paper's accounting)",
             f"pi0 {lib['pi0'][1]} -> {lib['pi0 + GridS K=16'][1]} G (-{paper_flops} %)", ours_flops,
             "not testable here (pi0 is not trained here; its real full-depth FLOPs are in "
             "benchmarks/flops/RESULTS.md)"],
            ["Inference speed-up on a consumer GPU", f"{PAPER['real_robot']['speedup']}x", ours_lat,
             "not testable here (no consumer GPU in the study; the CPU ratio is shown for what it is)"],
            ["Real-robot success gain (SO100, SmolVLA)", f"+{PAPER['real_robot']['success_pp']} pp",
             "-", "not testable here (no robot)"],
            ["Success on LIBERO-Goal and LIBERO-Long (GridS-16 vs pi0)",
             f"{obj('pi0 + GridS K=16', 4) - obj('pi0', 4):+.1f} / {obj('pi0 + GridS K=16', 5) - obj('pi0', 5):+.1f}"
             " pp", "-", f"{NOT_YET} (these suites are not in this study's plan)"],
            ["The points look at what matters", "figures only, no number", self._points_summary(suite),
             "not testable here (the paper gives no number to test against)"],
        ]
        lines += table(["claim", "paper", "ours", "mark"], rows, "llll") + [""]
        suites = [s.replace("libero_", "").replace("10", "long").capitalize() for s in PAPER["suites"]]
        lines += ["<details><summary>The paper's LIBERO table (success %, visual tokens per image, its FLOPs)"
                  "</summary>", ""]
        lines += table(["model", "tokens", "GFLOPs (paper's accounting)", *suites, "Avg"],
                       [[m, str(v[0]), "-" if v[1] is None else f"{v[1]:.2f}",
                         *("-" if x is None else f"{x:.1f}" for x in v[2:])] for m, v in lib.items()])
        return lines + ["", "</details>", ""]

    def _points_summary(self, suite: str) -> str:
        n = self.find(suite, "grids", 16)
        if not n:
            return NOT_YET
        parts = []
        for cam in dict.fromkeys(c for r in self.variants[suite][n].runs for c in (r.ind.results.get("points") or {})):
            cams = [r.ind.results["points"][cam] for r in self.variants[suite][n].runs
                    if cam in (r.ind.results.get("points") or {})]
            near = [c["policy"]["within_radius"] for c in cams if c.get("policy", {}).get("within_radius") is not None]
            grid = [c["fixed-grid"]["within_radius"] for c in cams
                    if c.get("fixed-grid", {}).get("within_radius") is not None]
            if near and grid:
                parts.append(f"{cam}: {sum(near) / len(near):.3f} of GridS-16's points near a target vs "
                             f"{sum(grid) / len(grid):.3f} for the fixed grid")
        return "; ".join(parts) if parts else NOT_YET


def load_plans(paths: list[Path]) -> tuple[dict, dict, list[str]]:
    """``(variants planned per suite, OOD planned per suite (a sentence), the plan files read)`` from study plan
    files; the built-in :data:`PLAN` / :data:`OOD_PLANNED` when none can be read."""
    plan: dict[str, dict[str, tuple[int, bool]]] = {}
    ood: dict[str, str] = {}
    read = []
    for path in paths:
        try:
            d = json.loads(Path(path).read_text())
            suite, stages = d["suite"], list(d["stages"])
            seeds: dict[str, set[int]] = {}
            extra: dict[str, bool] = {}
            specs: dict[str, None] = {}
            ood_runs: dict[str, set[int]] = {}
            for st in stages:
                for v in st["variants"]:
                    seeds.setdefault(v, set()).update(st["seeds"])
                    extra[v] = extra.get(v, True) and st.get("name") == "extra"
                    if st.get("ood"):
                        specs.update(dict.fromkeys(st["ood"]))
                        ood_runs.setdefault(v, set()).update(st["seeds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        names = (["dense"] if "dense" in seeds else []) + [v for v in seeds if v != "dense"]
        plan[suite] = {v: (len(seeds[v]), extra[v]) for v in names}
        if specs:
            who = "; ".join(f"{v} (seeds {', '.join(map(str, sorted(x)))})" for v, x in ood_runs.items())
            ood[suite] = (f"{', '.join(specs)} on {who}, {d.get('ood_episodes_per_task', '?')} episodes per task "
                          f"({d.get('ood_plus_per_task', '?')} variant tasks per task for LIBERO-plus)")
        read.append(shown_path(Path(path)))
    return (plan, ood, read) if read else (PLAN, OOD_PLANNED, [])


def rebuild(study: Path, archive: Path, out: Path, figures: Path, n_boot: int = N_BOOT,
            plans: list[Path] | None = None) -> str:
    """Write ``out`` and the plots under ``figures``; returns the markdown. ``plans``: the study's plan files
    (default: ``benchmarks/libero/study*.json``; an empty list uses the built-in copy)."""
    if plans is None:
        plans = sorted((REPO / "benchmarks" / "libero").glob("study*.json"))
    report = Report(load_study(study), load_archive(archive), Figures(figures, out), n_boot, shown_path(study),
                    shown_path(archive), load_plans(plans))
    text = report.build()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return text


# ------------------------------------------------------------------------------------------------ SO-101
SO101_PLAN = REPO / "benchmarks" / "so101" / "study.json"
SO101_OUT = REPO / "benchmarks" / "so101" / "RESULTS.md"
#: The lines around the generated section of ``benchmarks/so101/RESULTS.md``; the rest of that file is hand-written.
SO101_BEGIN = "<!-- BEGIN policies: generated by `python benchmarks/results.py` from the archive; do not edit -->"
SO101_END = "<!-- END policies -->"


def so101_section(plan_file: Path, archive: Path, n_boot: int = N_BOOT) -> list[str]:
    """The SO-101 study's policy rows: per split (in distribution, each OOD evaluation) and variant, pooled success
    with its Wilson interval, Δ vs dense (seed-then-episode bootstrap, paired on the same scenes) with the pooled
    McNemar test and a verdict, and the paper's real-robot numbers beside GridS-16's."""
    try:
        plan = json.loads(plan_file.read_text())
        stages = list(plan["stages"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{shown_path(plan_file)}: cannot read the SO-101 study plan ({e!r})") from None
    seeds: dict[str, set[int]] = {}
    for st in stages:
        for v in st["variants"]:
            seeds.setdefault(v, set()).update(st["seeds"])
    planned = {v: len(seeds[v]) for v in (["dense"] if "dense" in seeds else []) + [v for v in seeds if v != "dense"]}
    shown = shown_path(archive)
    runs = [r for f in (sorted(archive.iterdir()) if archive.is_dir() else [])
            if (r := _run(f, archive.name, f"{shown}/{f.name}")) is not None]
    variants = Report._variants(runs, planned)
    real = PAPER["real_robot"]
    lines = [SO101_BEGIN, "", "## Policies: dense vs GridS", "",
             f"Rebuilt by `python benchmarks/results.py` from the run folders under `{shown}/` and the plan "
             f"`{shown_path(plan_file)}`; do not edit this section by hand (`tests/test_results_rebuild.py` rebuilds "
             "it). Statistics as in [benchmarks/RESULTS.md](../RESULTS.md): pooled success with a 95 % Wilson "
             f"interval; Δ vs dense in pp with a 95 % interval from the seed-then-episode bootstrap ({n_boot} "
             "resamples), paired on the same seed and scene; McNemar on the discordant pairs pooled over seeds; a "
             "verdict says *better* or *worse* only when the interval excludes 0.", "",
             f"Plan: one policy per run trained on the demos of {', '.join(plan.get('tasks', []))} "
             f"(`{plan.get('data')}`), {plan.get('steps')} steps x batch {plan.get('batch_size')}, lr "
             f"{plan.get('lr')}, warm-up {plan.get('warmup_steps')}"
             + "".join(f", {part} options {_settings(plan[part])}" for part in ("model", "train") if plan.get(part))
             + "; " + ", ".join(f"{v} ({n} seeds)" for v, n in planned.items())
             + f"; evaluated per task on {plan.get('episodes_per_task')} held-out in-distribution scenes and "
             f"{plan.get('ood_episodes_per_task')} OOD scenes, once each.", ""]
    if not runs:
        return lines + [f"No SO-101 policy run archived under `{shown}/` yet: {NOT_YET}. The paper (SO100 arm, "
                        f"SmolVLA): GridS {real['success_pp']:+.1f} pp over dense in distribution, "
                        f"{real['ood_distractors_pp']:+.1f} pp in {real['ood_scenes']} OOD scenes with distractors.",
                        "", SO101_END]
    done = [r for r in runs if r.complete]
    tr = [r.train or {} for r in runs]
    res = [r.ind.results.get("run", {}) if r.ind else {} for r in runs]
    rec: dict[str, list[str]] = {}
    for r in runs:
        for k, v in r.recorded.items():
            rec.setdefault(k, []).append(v)
    ood_names = sorted({p for r in runs for p in r.ood})
    lines += [f"From the run files: {len(runs)} run folders, {len(done)} with a complete in-distribution "
              f"evaluation; steps {distinct([t.get('steps') for t in tr])}; batch "
              f"{distinct([t.get('batch_size') for t in tr])}; demonstrations {demo_sets([r.data for r in runs])}; "
              f"in-distribution scenes {distinct([x.get('scene_seeds') for x in res])}, "
              f"{distinct([x.get('episodes_per_task') for x in res])} per task; step limit "
              f"{distinct([x.get('max_steps') for x in res])}"
              + ("; recorded: " + "; ".join(f"{k} {distinct(v)}" for k, v in rec.items()) if rec else "") + ".", ""]
    dense = next((n for n, v in variants.items() if role(v.model)[0] == "dense"), None)
    g16 = next((n for n, v in variants.items() if role(v.model) == ("grids", 16)), None)
    splits = [(None, "in distribution", real["success_pp"])] + (
        [(p, f"out of distribution (`{p}`)", real["ood_distractors_pp"]) for p in ood_names]
        or [("", "out of distribution", real["ood_distractors_pp"])])  # none evaluated yet
    busy = {r.variant for r in runs if not r.complete}
    rows, cmps = [], {}
    for p, label, paper in splits:
        for name in _order(set(variants) | set(planned) | busy, planned):
            v = variants.get(name)
            want = f"/{planned[name]}" if name in planned else ""
            out = v.outcomes(p) if v and (p is None or p in ood_names) else {}
            if not out:
                state = "in progress" if name in busy and p is None else NOT_YET
                rows.append([label, name, f"0{want}", state, "", "", "", "", "", ""])
                continue
            d = variants.get(dense) if dense else None
            c = (compare(out, d.outcomes(p), f"so101|{name}|{dense}|{p or ''}", n_boot)
                 if d and name != dense else None)
            cmps[(name, p)] = c
            s, n = sum(sum(e.values()) for e in out.values()), sum(len(e) for e in out.values())
            rows.append([label, name, f"{len(out)}{want}", success_cell(s, n), wilson_cell(s, n),
                         ", ".join(f"s{k}: {sum(e.values())}/{len(e)}" for k, e in out.items()),
                         "reference" if name == dense else (interval_pp(c) if c else "-"),
                         pvalue(c.pooled[1]) if c and c.pooled else "-",
                         "reference" if name == dense else (verdict(c, "dense") if dense else "no dense run yet"),
                         f"{paper:+.1f}" if (v.model or {}).get("reducer") == "grids" and v.model.get("k") == 16
                         else "-"])
    lines += table(["split", "variant", "seeds (done/planned)", "success (pooled)", "95 % Wilson", "per seed",
                    "Δ vs dense, pp [95 % seed bootstrap]", "McNemar p (pooled)", "verdict",
                    "paper's Δ, pp (SO100, GridS-16)"], rows, "llrrrlrrlr") + [""]
    claims = [["GridS-16 beats dense in distribution",
               *effect_cells(cmps.get((g16, None)), real["success_pp"], f"{real['success_pp']:+.1f} pp")]]
    claims += [[f"GridS-16 beats dense {label}",
                *effect_cells(cmps.get((g16, p)), real["ood_distractors_pp"],
                              f"{real['ood_distractors_pp']:+.1f} pp ({real['ood_scenes']} scenes with distractors)")]
               for p, label, _ in splits[1:]]
    lines += ["The paper's real-robot claims beside ours (its SO100 arm and SmolVLA; here a simulated SO-101 and "
              "the compact policy, so only the direction and a rough size compare):", ""]
    lines += table(["claim", "paper", "ours (Δ vs dense, pp [95 %])", "mark"], claims, "llll") + [""]
    names = {tuple(r.ind.results.get("run", {}).get("task_names") or ()) for r in done}
    if len(names) == 1 and () not in names:  # task_id i is the plan's task i
        tasks = list(names.pop())
        rows = []
        for p, label, _ in splits:
            for name, v in variants.items():
                pairs = [(t, ok) for e in v.outcomes(p).values() for (t, _), ok in e.items()]
                per = [(sum(ok for t, ok in pairs if t == i), sum(t == i for t, _ in pairs)) for i in range(len(tasks))]
                if pairs:
                    rows.append([label, name, *(success_cell(k, n) if n else "-" for k, n in per)])
        lines += ["<details><summary>Per task (pooled over the seeds)</summary>", ""]
        lines += table(["split", "variant", *tasks], rows, "ll" + "r" * len(tasks)) + ["", "</details>", ""]
    return lines + [SO101_END]


def replace_section(out: Path, begin: str, end: str, section: list[str], flag: str) -> str:
    """Replace the lines from ``begin`` to ``end`` of ``out`` (both kept, both alone on their lines) with
    ``section`` (which starts with ``begin`` and ends with ``end``), atomically; the rest of the file is left as
    written by hand. ``flag`` names the option that chose ``out`` in errors. Returns the file's new text."""
    try:
        text = out.read_text()
    except OSError as e:
        raise SystemExit(f"{flag} {shown_path(out)}: cannot read it ({e.strerror})") from None
    lines = text.splitlines()
    if lines.count(begin) != 1 or lines.count(end) != 1 or lines.index(begin) > lines.index(end):
        raise SystemExit(f"{flag} {shown_path(out)}: found {lines.count(begin)} begin and "
                         f"{lines.count(end)} end lines of the generated section, expected one "
                         f"{begin!r} followed by one {end!r}")
    new = "\n".join(lines[:lines.index(begin)] + section + lines[lines.index(end) + 1:]) + "\n"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(new)
    tmp.replace(out)
    return new


def rebuild_so101(plan: Path = SO101_PLAN, out: Path = SO101_OUT, archive: Path | None = None,
                  n_boot: int = N_BOOT) -> str:
    """Replace the generated section of ``out`` (between :data:`SO101_BEGIN` and :data:`SO101_END`) with
    :func:`so101_section`; ``archive`` defaults to the plan's, relative to the repository. Returns the file's text."""
    if archive is None:
        try:
            archive = REPO / json.loads(plan.read_text())["archive"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{shown_path(plan)}: cannot read the archive folder of the SO-101 plan ({e!r})") \
                from None
    return replace_section(out, SO101_BEGIN, SO101_END, so101_section(plan, archive, n_boot), "--so101-out")


# ------------------------------------------------------------------------------------------------ README
README = REPO / "README.md"
README_BEGIN = "<!-- BEGIN results: generated by `python benchmarks/results.py` from the RESULTS files; do not edit -->"
README_END = "<!-- END results -->"
#: The header lines (their start) of the generated tables the README's summary is read from.
_LIBERO_HEAD = "| variant | tokens / camera | seeds (done/planned) | success (pooled) |"
_PEERS_HEAD = "| variant | reducer | seeds | success |"
_SO101_HEAD = "| split | variant | seeds (done/planned) | success (pooled) |"


def _rows(text: str, head: str) -> list[list[str]] | None:
    """The cells of each row of the first table in ``text`` whose header line starts with ``head`` (None: no such
    table, as in a report with nothing measured yet)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(head)), None)
    if start is None:
        return None
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def readme_section(libero: str, so101: str) -> list[str]:
    """The README's summary of the two studies: every measured variant's seeds, pooled success, Δ vs dense with
    its seed-aware interval and verdict, read from the generated tables of ``libero`` (benchmarks/RESULTS.md) and
    ``so101`` (benchmarks/so101/RESULTS.md), so the README repeats them and never goes stale."""
    what = {r[0]: r[1] for r in _rows(libero, _PEERS_HEAD) or []} | {"dense": "all tokens"}
    measured = [("LIBERO " + MAIN_SUITE, r[0], r) for r in _rows(libero, _LIBERO_HEAD) or []]
    # the SO-101 table has its split where the LIBERO one has the variant, and the variant where it has the tokens:
    # seeds, success, Δ and verdict sit in the same columns
    measured += [(f"SO-101, {r[0]}", r[1], r) for r in _rows(so101, _SO101_HEAD) or []]
    rows = [[bench, name, what.get(name, "-"), r[2].split("/")[0], r[3], r[6], r[8]] for bench, name, r in measured
            if not r[3].startswith((NOT_YET, "in progress"))]
    if not rows:
        return [README_BEGIN, "", f"No study has a complete evaluation yet: {NOT_YET}.", "", README_END]
    return [README_BEGIN, "",
            "The studies so far (this table is rebuilt by `python benchmarks/results.py` from "
            "[benchmarks/RESULTS.md](benchmarks/RESULTS.md) and [benchmarks/so101/RESULTS.md](benchmarks/so101/"
            "RESULTS.md), where the protocol, every run and the seed-by-seed numbers are; variants are the presets of "
            "`grids_vla.policy.configuration_grids_vla.PRESETS`; small-scale, 2 CPU cores; a verdict needs an "
            "interval that excludes 0):", ""] \
        + table(["benchmark", "variant", "what it is", "seeds", "success (pooled)",
                 "Δ vs dense, pp [95 % seed bootstrap]", "verdict"], rows, "lllrrrl") + ["", README_END]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default=str(REPO / "benchmarks" / "libero" / "study"),
                   help="root of the study's run folders: STUDY/<suite>/<variant>_s<seed>/")
    p.add_argument("--archive", default=str(REPO / "benchmarks" / "libero" / "success"),
                   help="archived runs (evaluated before the gripper-reset fix), shown apart")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"))
    p.add_argument("--figures", default=str(REPO / "benchmarks" / "figures"))
    p.add_argument("--n-boot", type=int, default=N_BOOT, help="bootstrap resamples per comparison")
    p.add_argument("--plans", nargs="*", default=None,
                   help="the study's plan files (default: benchmarks/libero/study*.json)")
    p.add_argument("--so101-plan", default=str(SO101_PLAN), help="the SO-101 study's plan file")
    p.add_argument("--so101-archive", default=None,
                   help="the SO-101 study's run folders (default: the plan's archive)")
    p.add_argument("--so101-out", default=str(SO101_OUT),
                   help="the file whose generated section gets the SO-101 policy rows")
    p.add_argument("--readme", default=str(README),
                   help="the file whose generated section gets the summary of both studies")
    args = p.parse_args(argv)
    libero = rebuild(Path(args.study), Path(args.archive), Path(args.out), Path(args.figures), args.n_boot,
                     None if args.plans is None else [Path(x) for x in args.plans])
    print(f"wrote {args.out}", file=sys.stderr)
    so101 = rebuild_so101(Path(args.so101_plan), Path(args.so101_out),
                          None if args.so101_archive is None else Path(args.so101_archive), args.n_boot)
    print(f"wrote the generated section of {args.so101_out}", file=sys.stderr)
    replace_section(Path(args.readme), README_BEGIN, README_END, readme_section(libero, so101), "--readme")
    print(f"wrote the generated section of {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
