"""``grids-vla flops`` and ``grids-vla bench-latency``: FLOPs tables and latency of the real VLA architectures."""

from __future__ import annotations

import argparse
import json
import sys

MODEL_CHOICES = ("pi0", "pi05", "smolvla", "openvla", "openvla-oft")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``flops`` and ``bench-latency`` subcommands."""
    p = subparsers.add_parser(
        "flops",
        help="per-component FLOPs of a VLA, dense vs GridS at each K, with the zero-visual-token limit",
        description="Count FLOPs on the meta device (no weights, seconds on a CPU). 'full' is the real cost; "
        "'paper' counts each layer stack and the denoising loop once, as the GridS paper's XLA figures do.",
    )
    p.add_argument("--model", nargs="+", default=["pi0"], help=f"one or more of {', '.join(MODEL_CHOICES)}, or all")
    p.add_argument("--k", nargs="+", type=int, default=[16, 4, 1], help="GridS tokens per camera (dense always shown)")
    p.add_argument("--cameras", type=int, default=None, help="camera images (default: the model's)")
    p.add_argument("--prompt-tokens", type=int, default=None, help="text tokens (default: the model's)")
    p.add_argument("--accounting", choices=("full", "paper"), default="full")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_flops)

    b = subparsers.add_parser(
        "bench-latency",
        help="batch-1 latency, dense vs GridS at each K, interleaved in one run",
        description="Times the VLA at real width with random weights; depth and denoising steps can be reduced "
        "to fit a small CPU (the report states what was measured and extrapolates to full depth separately).",
    )
    b.add_argument("--model", default="pi0", help=f"one of {', '.join(MODEL_CHOICES)}")
    b.add_argument("--k", nargs="+", type=int, default=[16, 4, 1])
    b.add_argument("--cameras", type=int, default=None)
    b.add_argument("--prompt-tokens", type=int, default=None)
    b.add_argument("--vision-layers", type=int, default=2, help="layers per vision encoder (0: the real depth)")
    b.add_argument("--llm-layers", type=int, default=2, help="LLM and expert layers (0: the real depth)")
    b.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    b.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (also export OMP_NUM_THREADS)")
    b.add_argument("--device", default="cpu", help="cpu, cuda or auto (cuda when available)")
    b.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", default=None, metavar="PATH", help="also write the full result as JSON here")
    b.set_defaults(func=_bench)


def _flops(args: argparse.Namespace) -> int:
    from .counter import flops_table, format_table

    models = list(MODEL_CHOICES) if args.model == ["all"] else args.model
    try:
        tables = [
            flops_table(m, args.k, cameras=args.cameras, prompt_tokens=args.prompt_tokens, accounting=args.accounting)
            for m in models
        ]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(tables[0] if len(tables) == 1 else tables, indent=2))
    else:
        print("\n\n".join(format_table(t) for t in tables))
    return 0


def _bench(args: argparse.Namespace) -> int:
    import torch

    from .latency import bench_latency, format_latency

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    try:
        result = bench_latency(
            args.model, args.k, cameras=args.cameras, prompt_tokens=args.prompt_tokens,
            vision_layers=args.vision_layers or None, llm_layers=args.llm_layers or None, steps=args.steps,
            repeats=args.repeats, warmup=args.warmup, threads=args.threads, device=device, dtype=dtype,
            seed=args.seed, progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        )  # fmt: skip
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_latency(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0
