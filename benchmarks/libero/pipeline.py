"""Training throughput through the whole ``grids-vla train`` pipeline (data loading, augmentation, step), side by side.

``throughput.py`` times the model step on random tensors; this script runs the real training loop on generated
LIBERO demos for every variant in turn, ``--rounds`` times in rotated order (a fresh run of ``--steps`` steps each
time, images preloaded as ``grids-vla train`` does by default), and reads the per-step wall times from each run's
``metrics.csv``, leaving out the first ``--skip`` steps of a run (loader start-up, first allocations). Threads are
pinned; the table gives medians over rounds and ratios to dense.

    OMP_NUM_THREADS=2 python benchmarks/libero/pipeline.py --data runs/libero/data/libero_object \\
        --threads 2 --steps 60 --rounds 2 --batch-size 32 --out benchmarks/libero/pipeline
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import tempfile
from datetime import date
from pathlib import Path

import torch

from grids_vla.flops.latency import refuse_if_busy
from grids_vla.policy.configuration_grids_vla import PRESETS, GridSVLAConfig
from grids_vla.policy.training import TrainConfig, data_image_size, train


def step_seconds(metrics: Path, skip: int) -> list[float]:
    """Wall seconds of each logged step after the first ``skip`` (``elapsed_s`` is cumulative)."""
    with open(metrics) as f:
        times = [float(r["elapsed_s"]) for r in csv.DictReader(f)]
    return [b - a for a, b in zip(times[skip:], times[skip + 1 :])]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder of *_demo.hdf5 files")
    p.add_argument("--variants", nargs="+", default=["dense", "grids-16"], choices=list(PRESETS))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--skip", type=int, default=10, help="leading steps of each run not timed")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for pipeline.md / pipeline.json (printed only if omitted)")
    p.add_argument("--allow-busy", action="store_true", help="time even when other jobs load the CPUs")
    args = p.parse_args(argv)
    refuse_if_busy(args.allow_busy)
    if args.steps <= args.skip + 1:
        raise SystemExit(f"--steps ({args.steps}) must exceed --skip + 1 ({args.skip + 1}) to time any step")
    torch.set_num_threads(args.threads)
    size = data_image_size(args.data)
    per_step: dict[str, list[float]] = {v: [] for v in args.variants}
    rounds: dict[str, list[float]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = args.variants[r % len(args.variants) :] + args.variants[: r % len(args.variants)]
            for name in order:
                run = Path(tmp) / f"{name}_r{r}"
                cfg = TrainConfig(data=args.data, out=str(run), steps=args.steps, batch_size=args.batch_size,
                                  seed=args.seed, num_workers=args.num_workers, save_every=args.steps,
                                  log_every=args.steps)
                train(cfg, GridSVLAConfig.preset(name, image_size=size), log=io.StringIO())
                secs = step_seconds(run / "metrics.csv", args.skip)
                per_step[name] += secs
                rounds[name].append(args.batch_size * len(secs) / sum(secs))
    med = {v: statistics.median(per_step[v]) for v in args.variants}
    dense = "dense" if "dense" in args.variants else args.variants[0]
    lines = [
        f"`grids-vla train` pipeline, batch {args.batch_size}, {args.num_workers} loader process(es), "
        f"{args.threads} threads, seed {args.seed}, {args.rounds} rounds x {args.steps} steps (first {args.skip} "
        f"of each not timed), {platform.machine()} CPU ({os.cpu_count()} cores), load average "
        f"{os.getloadavg()[0]:.1f}, {date.today()}; data `{args.data}`",
        "",
        "| variant | median step ms | samples/s (median step) | samples/s per round | vs dense |",
        "|---|---:|---:|---|---:|",
    ]
    for v in args.variants:
        per_round = ", ".join(f"{x:.1f}" for x in rounds[v])
        lines.append(f"| {v} | {1000 * med[v]:.1f} | {args.batch_size / med[v]:.1f} | {per_round} | "
                     f"{med[dense] / med[v]:.2f}x |")
    print("\n".join(lines))
    result = {"args": vars(args), "step_s": per_step, "round_samples_per_s": rounds}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "pipeline.md").write_text("\n".join(lines) + "\n")
        (out / "pipeline.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
