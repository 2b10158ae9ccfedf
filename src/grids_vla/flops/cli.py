"""``grids-vla flops`` and ``grids-vla bench-latency``: FLOPs tables and latency of the real VLA architectures.

Each command's flags mirror the fields of its dataclass (:class:`FlopsCommand`, :class:`LatencyCommand`); a new flag is
a new field (and its help line).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass

from .._cli_fields import add_dataclass_fields, picked_fields
from .._io import atomic_write_text

MODEL_CHOICES = ("pi0", "pi05", "smolvla", "openvla", "openvla-oft")

_HELP = {
    "k": "GridS tokens per camera (dense always shown)",
    "cameras": "camera images (default: the model's)",
    "prompt_tokens": "text tokens (default: the model's)",
    "accounting": "full (the real cost) or paper (each layer stack and the denoising loop counted once)",
    "vision_layers": "layers per vision encoder (0: the real depth)",
    "llm_layers": "LLM and expert layers (0: the real depth)",
    "steps": "denoising steps (default: the model's)",
    "repeats": "timed rounds (median reported)",
    "warmup": "untimed rounds first",
    "threads": "torch.set_num_threads (also export OMP_NUM_THREADS)",
    "device": "cpu, cuda or auto (cuda when available)",
    "dtype": "float32 (CPU default) or bfloat16 (CUDA default)",
    "seed": "seed of the random weights and inputs",
    "after_layer": "put GridS inside the vision encoder, before layer L (0 .. encoder depth; one row per L and K); "
    "default: none, GridS after the projector",
}


@dataclass
class FlopsCommand:
    """``grids-vla flops`` options."""

    model: tuple[str, ...] = ("pi0",)
    k: tuple[int, ...] = (16, 4, 1)
    cameras: int | None = None
    prompt_tokens: int | None = None
    accounting: str = "full"
    after_layer: tuple[int, ...] = ()
    json: bool = False


@dataclass
class LatencyCommand:
    """``grids-vla bench-latency`` options."""

    model: str = "pi0"
    k: tuple[int, ...] = (16, 4, 1)
    cameras: int | None = None
    prompt_tokens: int | None = None
    vision_layers: int = 2
    llm_layers: int = 2
    steps: int | None = None
    repeats: int = 5
    warmup: int = 1
    threads: int = 2
    device: str = "cpu"
    dtype: str | None = None
    seed: int = 0
    after_layer: tuple[int, ...] = ()
    json: str | None = None


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``flops`` and ``bench-latency`` subcommands."""
    p = subparsers.add_parser(
        "flops",
        help="per-component FLOPs of a VLA, dense vs GridS at each K, with the zero-visual-token limit",
        description="Count FLOPs on the meta device (no weights, seconds on a CPU). 'full' is the real cost; "
        "'paper' counts each layer stack and the denoising loop once, as the GridS paper's XLA figures do.",
    )
    add_dataclass_fields(p, FlopsCommand, help=_HELP | {
        "model": f"one or more of {', '.join(MODEL_CHOICES)}, or all", "json": "print JSON instead of a table"},
        choices={"accounting": ("full", "paper")})
    p.set_defaults(func=_flops)

    b = subparsers.add_parser(
        "bench-latency",
        help="batch-1 latency, dense vs GridS at each K, interleaved in one run",
        description="Times the VLA at real width with random weights; depth and denoising steps can be reduced "
        "to fit a small CPU (the report states what was measured and extrapolates to full depth separately).",
    )
    add_dataclass_fields(b, LatencyCommand, help=_HELP | {
        "model": f"one of {', '.join(MODEL_CHOICES)}", "json": "also write the full result as JSON to this path"})
    b.set_defaults(func=_bench)


def _need_transformers() -> None:
    """The architectures are built from Hugging Face ``transformers`` classes: say which extra brings it."""
    if importlib.util.find_spec("transformers") is None:
        raise ImportError("this command builds the VLAs from the transformers package, which is not installed: "
                          "pip install 'grids-vla[flops]'")


def _check_placement_flags(models: list[str], ks: tuple[int, ...], layers: tuple[int, ...]) -> None:
    """``--after-layer`` and ``--k`` against each model's encoder depth and patch grid, naming the flags."""
    from .arch import get_config
    from .counter import check_placement

    for name in models:
        cfg = get_config(name)
        for layer in layers:
            for k in ks:
                check_placement(cfg, k, layer, k_name="--k", layer_name="--after-layer")


def _flops(args: argparse.Namespace) -> int:
    from .counter import flops_table, format_table

    cfg = FlopsCommand(**picked_fields(args, FlopsCommand))
    models = list(MODEL_CHOICES) if cfg.model == ("all",) else list(cfg.model)
    _need_transformers()
    _check_placement_flags(models, cfg.k, cfg.after_layer)
    tables = [
        flops_table(m, cfg.k, cameras=cfg.cameras, prompt_tokens=cfg.prompt_tokens, accounting=cfg.accounting,
                    after_layers=cfg.after_layer or None)
        for m in models
    ]
    if cfg.json:
        print(json.dumps(tables[0] if len(tables) == 1 else tables, indent=2))
    else:
        print("\n\n".join(format_table(t) for t in tables))
    return 0


def _bench(args: argparse.Namespace) -> int:
    import torch

    from .latency import bench_latency, format_latency

    cfg = LatencyCommand(**picked_fields(args, LatencyCommand))
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = cfg.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    _need_transformers()
    _check_placement_flags([cfg.model], cfg.k, cfg.after_layer)
    result = bench_latency(
        cfg.model, cfg.k, cameras=cfg.cameras, prompt_tokens=cfg.prompt_tokens,
        vision_layers=cfg.vision_layers or None, llm_layers=cfg.llm_layers or None, steps=cfg.steps,
        repeats=cfg.repeats, warmup=cfg.warmup, threads=cfg.threads, device=device, dtype=dtype,
        seed=cfg.seed, progress=lambda msg: print(msg, file=sys.stderr, flush=True), after_layers=cfg.after_layer,
    )  # fmt: skip
    print(format_latency(result))
    if cfg.json:
        atomic_write_text(cfg.json, json.dumps(result, indent=2))
    return 0
