"""Training throughput and batch-1 latency of the compact VLA, dense vs token reducers, side by side.

Random weights and random inputs at the policy's real size (default config: 2 cameras at 128 px, 256
tokens per camera). Every round times one training step (forward, backward, AdamW) at ``--batch-size``
and one ``predict_action`` call at batch 1 for every variant, in rotated order, after warm-up rounds;
the table gives medians and ratios to dense. Threads are pinned.

    OMP_NUM_THREADS=2 python benchmarks/libero/throughput.py --threads 2 --rounds 10 --out benchmarks/libero
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from grids_vla.flops.latency import refuse_if_busy
from grids_vla.policy.configuration_grids_vla import PRESETS, GridSVLAConfig
from grids_vla.policy.modeling_grids_vla import GridSVLAPolicy, atomic_write_text


def make_batch(cfg: GridSVLAConfig, b: int, gen: torch.Generator) -> dict:
    batch = {cam: torch.randint(0, 256, (b, 3, cfg.image_size, cfg.image_size), generator=gen, dtype=torch.uint8)
             for cam in cfg.cameras}
    batch["state"] = torch.randn(b, cfg.state_dim, generator=gen)
    batch["action"] = torch.randn(b, cfg.chunk, cfg.action_dim, generator=gen)
    batch["instruction"] = [cfg.instructions[0]] * b
    return batch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=["dense", "grids-16", "grids-16-l0"], choices=list(PRESETS))
    parser.add_argument("--out", default=None, help="folder for RESULTS table + JSON (printed only if omitted)")
    parser.add_argument("--allow-busy", action="store_true", help="time even when other jobs load the CPUs")
    args = parser.parse_args(argv)
    refuse_if_busy(args.allow_busy)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    policies, optims, configs = {}, {}, {}
    for name in args.variants:
        cfg = GridSVLAConfig.preset(name, instructions=("pick up the bowl",))
        policies[name] = GridSVLAPolicy(cfg)
        optims[name] = torch.optim.AdamW(policies[name].parameters(), lr=1e-4)
        configs[name] = cfg
    train_batch = make_batch(configs[args.variants[0]], args.batch_size, gen)
    one = make_batch(configs[args.variants[0]], 1, gen)
    train_ms: dict[str, list[float]] = {n: [] for n in args.variants}
    infer_ms: dict[str, list[float]] = {n: [] for n in args.variants}
    for r in range(args.warmup + args.rounds):
        order = args.variants[r % len(args.variants):] + args.variants[: r % len(args.variants)]
        for name in order:
            model, opt = policies[name], optims[name]
            model.train()
            start = time.perf_counter()
            loss, _ = model.compute_loss(train_batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t_train = time.perf_counter() - start
            model.eval()
            start = time.perf_counter()
            model.predict_action(one)
            t_infer = time.perf_counter() - start
            if r >= args.warmup:
                train_ms[name].append(t_train * 1000)
                infer_ms[name].append(t_infer * 1000)
    dense = "dense" if "dense" in args.variants else args.variants[0]
    med = {n: (statistics.median(train_ms[n]), statistics.median(infer_ms[n])) for n in args.variants}
    header = (f"batch {args.batch_size} training / batch 1 inference, {args.threads} threads, seed {args.seed}, "
              f"{args.rounds} rounds after {args.warmup} warm-up, {platform.machine()} CPU "
              f"({os.cpu_count()} logical cores), load average {os.getloadavg()[0]:.1f}, {date.today()}")
    lines = [header, "", "| variant | visual tokens (2 cameras) | params | train step ms | samples/s | vs dense | "
             "latency ms (b=1) | vs dense |", "|---|---|---|---|---|---|---|---|"]
    for n in args.variants:
        cfg = configs[n]
        tokens = cfg.visual_tokens
        params = sum(p.numel() for p in policies[n].parameters())
        t, i = med[n]
        lines.append(f"| {n} | {tokens} | {params / 1e6:.2f} M | {t:.1f} | {args.batch_size / t * 1000:.1f} | "
                     f"{med[dense][0] / t:.2f}x | {i:.2f} | {med[dense][1] / i:.2f}x |")
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "throughput.md", "\n".join(lines) + "\n")
        atomic_write_text(out / "throughput.json",
                          json.dumps({"args": vars(args), "train_ms": train_ms, "infer_ms": infer_ms}, indent=2))
    return {"train_ms": train_ms, "infer_ms": infer_ms, "table": lines}


if __name__ == "__main__":
    main()
