"""``grids-vla demo``: the main job. GridS-16 vs dense on real LIBERO tasks, end to end, in one command.

Generates (or reuses from a cache) scripted-expert demonstrations for one or two LIBERO tasks, trains a GridS-16
policy and a dense policy with the same budget (steps x batch), evaluates both from the official init states, and
writes ``report.md``: success rates, training samples/s, batch-1 latency, FLOPs per policy call, the loss curves and
the sampled GridS points over both camera views. It is a small-scale run (minutes of CPU), made to show the whole
pipeline and the speed-up on this machine; the success comparison at scale is ``benchmarks/libero/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .._cli_fields import add_dataclass_fields, picked_fields
from .._io import atomic_write_text

__all__ = ["DemoConfig", "run_demo", "default_cache"]

MODELS = {"grids": {"reducer": "grids"}, "dense": {"reducer": "dense"}}
QUICK = {"tasks": (0,), "demos_per_task": 3, "steps": 60, "batch_size": 8, "episodes_per_task": 1, "max_steps": 120}


def default_cache() -> str:
    """Where generated demos are kept between runs: ``$XDG_CACHE_HOME/grids-vla/libero`` (``~/.cache`` if unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "grids-vla", "libero")


@dataclass
class DemoConfig:
    """Settings of the demo; the CLI flags mirror these fields (``--quick`` overrides a few for a short run)."""

    out: str = "runs/demo"
    cache: str = ""
    suite: str = "libero_object"
    tasks: tuple[int, ...] = (0, 1)
    demos_per_task: int = 8
    image_size: int = 128
    k: int = 16
    steps: int = 400
    batch_size: int = 16
    lr: float = 1e-3
    episodes_per_task: int = 2
    max_steps: int | None = None
    workers: int = 2
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        self.tasks = tuple(int(t) for t in self.tasks)
        for name in ("demos_per_task", "image_size", "k", "steps", "batch_size", "episodes_per_task", "workers",
                     "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be a non-empty list of unique ids, got {list(self.tasks)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be a positive int, got {self.max_steps!r}")


def _need_libero() -> None:
    from ..envs.libero import _gl  # noqa: F401  (headless GL defaults, before libero loads the simulator)

    missing = []
    for module, extra in (("libero.libero", "libero"), ("h5py", "libero"), ("accelerate", "train")):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} ([{extra}])")
    if missing:
        raise SystemExit(f"the LIBERO demo needs {', '.join(missing)}: run `bash scripts/demo.sh`, or "
                         f"pip install 'grids-vla[libero,train,viz]'; `grids-vla toy` runs without a simulator")


def _stage(msg: str, began: float) -> None:
    print(f"\n== {msg} ({time.time() - began:.0f} s elapsed)", flush=True)


def _train_speed(metrics: Path, batch_size: int, skip: int = 5) -> float | None:
    """Samples/s over the run after ``skip`` warm-up steps, data loading and augmentation included."""
    with open(metrics) as f:
        rows = list(csv.DictReader(f))
    if len(rows) <= skip + 1:
        return None
    t0, t1 = float(rows[skip]["elapsed_s"]), float(rows[-1]["elapsed_s"])
    return (len(rows) - 1 - skip) * batch_size / max(t1 - t0, 1e-9)


def _policy_flops(checkpoint: Path) -> int:
    """FLOPs (2 x multiply-adds) of one batch-1 ``predict_action`` call with random inputs."""
    from ..flops.counter import count_flops
    from ..policy.modeling_grids_vla import GridSVLAPolicy

    policy = GridSVLAPolicy.from_pretrained(checkpoint).eval()
    c = policy.config
    gen = torch.Generator().manual_seed(0)
    batch: dict[str, Any] = {cam: torch.randint(0, 256, (1, 3, c.image_size, c.image_size), generator=gen,
                                                dtype=torch.uint8) for cam in c.cameras}
    batch["state"] = torch.zeros(1, c.state_dim)
    batch["instruction"] = [c.instructions[0]] if c.instructions else ["pick up the object"]
    with torch.no_grad():
        return count_flops(policy.predict_action, batch)


def _plot_losses(runs: dict[str, Path], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, metrics in runs.items():
        with open(metrics) as f:
            rows = list(csv.DictReader(f))
        ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], label=name, lw=1)
    ax.set(xlabel="step", ylabel="training loss (L1, normalised actions)", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Generate or reuse demos, train GridS-K and dense, evaluate both, write ``<out>/report.md``; returns results."""
    from ..envs.libero.generate import generate
    from ..policy.configuration_grids_vla import GridSVLAConfig
    from .evaluate import EvalConfig, evaluate
    from .train import TrainConfig, train

    _need_libero()
    began = time.time()
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.cache or default_cache())

    _stage(f"1/4 demonstrations: {cfg.demos_per_task} per task for {cfg.suite} tasks {list(cfg.tasks)} "
           f"(cache {cache}; reused when present)", began)
    summary = generate(cfg.suite, cfg.demos_per_task, cache, image_size=cfg.image_size, seed=cfg.seed,
                       tasks=cfg.tasks, workers=cfg.workers)
    short = {n: s["demos"] for n, s in summary["tasks"].items() if s["demos"] < cfg.demos_per_task}
    if short:
        raise RuntimeError(f"the expert fell short of {cfg.demos_per_task} demos for {short}")
    data = out / "data"  # links to just this run's task files (the cache may hold other tasks)
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    for name in summary["tasks"]:
        (data / f"{name}_demo.hdf5").symlink_to((cache / cfg.suite / f"{name}_demo.hdf5").resolve())
    gen_seconds = time.time() - began

    results: dict[str, Any] = {"config": asdict(cfg), "generation_seconds": round(gen_seconds, 1), "models": {}}
    metrics = {}
    for i, (name, kw) in enumerate(MODELS.items()):
        label = f"{name}-{cfg.k}" if name != "dense" else "dense"
        _stage(f"2/4 training {label}: {cfg.steps} steps x batch {cfg.batch_size} ({i + 1}/{len(MODELS)})", began)
        run_dir = out / label
        t0 = time.time()
        tcfg = TrainConfig(data=str(data), out=str(run_dir), steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                           warmup_steps=min(50, cfg.steps // 10), seed=cfg.seed, num_workers=1,
                           save_every=cfg.steps, log_every=max(10, cfg.steps // 10), overwrite=True)  # a rerun retrains
        trained = train(tcfg, GridSVLAConfig(image_size=cfg.image_size, k=cfg.k, **kw), log=sys.stdout)
        metrics[label] = run_dir / "metrics.csv"
        results["models"][label] = {
            "reducer": kw["reducer"], "final_loss": trained["loss"], "train_seconds": round(time.time() - t0, 1),
            "train_samples_per_s": _train_speed(metrics[label], cfg.batch_size),
            "gflops_per_call": _policy_flops(trained["checkpoint"]) / 1e9, "checkpoint": str(trained["checkpoint"]),
        }
    for i, label in enumerate(results["models"]):
        _stage(f"3/4 evaluating {label}: {cfg.episodes_per_task} episode(s) per task ({i + 1}/{len(MODELS)})", began)
        r = results["models"][label]
        res = evaluate(EvalConfig(checkpoint=r["checkpoint"], suite=cfg.suite, episodes_per_task=cfg.episodes_per_task,
                                  tasks=cfg.tasks, max_steps=cfg.max_steps, threads=cfg.threads,
                                  out=str(out / label / "eval"), video=int(r["reducer"] != "dense"), fresh=True,
                                  video_frames=4),
                       log=sys.stdout)
        o = res["overall"]
        r.update(successes=o["successes"], episodes=o["episodes"], ci95=o["ci95"],
                 mean_episode_length=o["mean_episode_length"], latency_ms=res["latency_ms"]["median"],
                 max_steps=res["run"]["max_steps"], points=res["points"])
    _stage("4/4 report", began)
    results["seconds"] = round(time.time() - began, 1)
    results["load_average_1min"] = round(os.getloadavg()[0], 2)
    report = _report(cfg, results, out, _plot_losses(metrics, out / "loss.png"))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out / "report.md", report)
    print(report)
    print(f"wrote {out / 'report.md'} in {results['seconds']:.0f} s")
    return results


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def _report(cfg: DemoConfig, results: dict[str, Any], out: Path, loss_plot: bool) -> str:
    from .report import points_markdown

    models = results["models"]
    dense = models["dense"]
    first = next(iter(models.values()))
    lines = [
        f"# GridS demo: GridS-{cfg.k} vs dense on {cfg.suite} tasks {list(cfg.tasks)}",
        "",
        f"{cfg.demos_per_task} scripted-expert demos per task at {cfg.image_size} px (2 cameras, 256 patch tokens "
        f"each); both policies trained {cfg.steps} steps x batch {cfg.batch_size}, seed {cfg.seed}; evaluated on "
        f"{cfg.episodes_per_task} official init state(s) per task, step limit {first['max_steps']}. "
        f"{cfg.threads} CPU threads on {platform.machine()} ({os.cpu_count()} cores), "
        f"{results['seconds'] / 60:.1f} min in all ({results['generation_seconds']:.0f} s of it for demos); 1-minute "
        f"load average {results['load_average_1min']:.1f} at the end (timings from a busy machine are not "
        "comparable with other runs, only within this one).",
        "",
        "**Small scale, read it as a pipeline check.** A few minutes of CPU training on a handful of demos rarely "
        "solves a task, and a few episodes cannot separate two policies (see the 95 % intervals); the success "
        "comparison at scale is in `benchmarks/libero/`. The speed columns are measured here, side by side, "
        "and do carry over: samples/s include data loading and augmentation, latency is the median policy call at "
        "batch 1 during evaluation.",
        "",
        "| policy | visual tokens | success | 95 % CI | final loss | train samples/s | vs dense | latency ms | "
        "vs dense | GFLOPs/call | vs dense |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in models.items():
        tokens = 2 * (cfg.k if r["reducer"] != "dense" else (cfg.image_size // 8) ** 2)
        lo, hi = r["ci95"]
        speed = r["train_samples_per_s"]
        lines.append(
            f"| {label} | {tokens} | {r['successes']}/{r['episodes']} | {100 * lo:.0f}-{100 * hi:.0f} % | "
            f"{r['final_loss']:.3f} | {speed:.1f} | {_ratio(speed, dense['train_samples_per_s'])} | "
            f"{r['latency_ms']:.2f} | {_ratio(dense['latency_ms'], r['latency_ms'])} | {r['gflops_per_call']:.3f} | "
            f"{_ratio(dense['gflops_per_call'], r['gflops_per_call'])} |"
            if speed is not None else f"| {label} | {tokens} | {r['successes']}/{r['episodes']} | - | - | - | - | - "
            f"| - | - | - |")
    if loss_plot:
        lines += ["", "![training loss](loss.png)"]
    grids_label = next(label for label, r in models.items() if r["reducer"] != "dense")
    sheets = sorted((out / grids_label / "eval" / "videos").glob("*.png"))
    if models[grids_label].get("points"):
        lines += ["", f"{grids_label}: " + points_markdown(models[grids_label]["points"], cfg.image_size)[0], "",
                  *points_markdown(models[grids_label]["points"], cfg.image_size)[2:]]
    if sheets:
        rel = sheets[0].relative_to(out)
        lines += ["", f"Where {grids_label} looked during its first evaluation episode ({cfg.k} points per camera, "
                      f"both cameras, a few policy calls; every step in `{rel.with_suffix('.mp4').as_posix()}`):",
                  "", f"![GridS points]({rel.as_posix()})"]
    lines += ["", "Reproduce: `grids-vla demo " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, tuple) else v}"
        for k, v in asdict(cfg).items() if v not in (None, "") and k != "cache") + "`", ""]
    return "\n".join(lines)


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="the main job: GridS-16 vs dense on LIBERO tasks (demos, training, evaluation, report)",
        description=__doc__.splitlines()[0])
    add_dataclass_fields(parser, DemoConfig, help={
        "cache": "folder for generated demos, reused across runs (default: $XDG_CACHE_HOME/grids-vla/libero)",
        "tasks": "task ids of the suite", "k": "GridS tokens per camera", "steps": "training steps (both policies)",
        "max_steps": "evaluation step limit (default: LIBERO's for the suite)",
        "workers": "demo-generation processes", "threads": "torch threads for training and evaluation"})
    parser.add_argument("--quick", action="store_true",
                        help="a few-minute pipeline check: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    parser.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    fields = picked_fields(args, DemoConfig)
    if args.quick:
        fields = {**QUICK, **fields}
    try:
        cfg = DemoConfig(**fields)
    except ValueError as e:
        raise SystemExit(f"grids-vla demo: {e}") from e
    run_demo(cfg)
    return 0
