"""Batch-1 latency of a VLA with dense visual tokens vs GridS at several K, measured in one run.

The downstream transformer runs at its real width with random weights (values do not change the
time of dense matmuls), built from the same code as the FLOP counter (:mod:`grids_vla.flops.arch`)
with fused attention (``sdpa``). Depth can be reduced (``vision_layers``, ``llm_layers``; the action
expert gets the LLM's depth, as in pi0 and SmolVLA) and the denoising steps too, so a run fits a small
CPU; the report states what was measured and, separately and clearly labelled, a linear
extrapolation to full depth (each layer of a stack costs the same at fixed token count).

Method: pinned thread count, ``warmup`` untimed rounds, then ``repeats`` rounds; each round runs
dense and every K once, in an order rotated every round so slow drifts (thermal, other processes)
hit all configurations alike; the median of each component over the rounds is reported. On CUDA,
every timed section ends with a synchronisation.

GridS inside the encoder (``after_layers``): each (K, L) row patches the encoder(s) with the project's
``grids_vla.patch.transformers`` (outside the timed section) and runs the projector on K tokens. With a
reduced encoder of ``B`` of ``D`` layers, the split is placed at ``floor(L * B / D)`` of the built layers
(``L = D`` splits after the last one); the full-depth estimate times the part before GridS plus
``L - split`` more layers at the dense row's per-layer time, and the part after GridS scaled to ``D - L``
layers. GridS's own time is read with hooks around its call.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import torch

from .arch import VLAModules, get_config
from .counter import check_placement

__all__ = ["bench_latency", "format_latency", "refuse_if_busy"]

PARTS = ("vision", "projector", "grids", "llm_prefix", "action")


def refuse_if_busy(allowed: bool, limit: float = 0.5) -> None:
    """Timings are only comparable on an idle machine: stop when the 1-minute load average says other jobs run (a
    study's training, tests), unless ``allowed`` (a benchmark's ``--allow-busy``)."""
    load = os.getloadavg()[0]
    if load > limit and not allowed:
        raise SystemExit(f"the 1-minute load average is {load:.2f} (> {limit}): other jobs share the CPUs and would "
                         "skew the timings; stop them (e.g. pause a study with kill -STOP) or pass --allow-busy")


def _check(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def bench_latency(
    model: str = "pi0",
    ks: Sequence[int] = (16, 4, 1),
    *,
    cameras: int | None = None,
    prompt_tokens: int | None = None,
    vision_layers: int | None = 2,
    llm_layers: int | None = 2,
    steps: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    threads: int = 2,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    after_layers: Sequence[int] = (),
) -> dict[str, Any]:
    """Time dense vs GridS-K end to end and per component; returns a JSON-ready dict.

    ``vision_layers`` / ``llm_layers`` / ``steps`` of ``None`` mean the real depth / step count.
    ``after_layers``: put GridS inside the vision encoder, one row per (K, L) (see the module docstring);
    empty: GridS after the projector.
    """
    cfg = get_config(model)
    cams = _check("cameras", cfg.default_cameras if cameras is None else cameras, 1)
    prompt = _check("prompt_tokens", cfg.default_prompt_tokens if prompt_tokens is None else prompt_tokens, 0)
    _check("repeats", repeats, 1)
    _check("warmup", warmup, 0)
    _check("threads", threads, 1)
    ks = [_check("k", k, 1) for k in ks]
    after_layers = list(after_layers)
    for k in ks:
        if after_layers:
            for layer in after_layers:
                check_placement(cfg, k, layer)
        elif k > cfg.tokens_per_camera:
            raise ValueError(f"k={k} exceeds the {cfg.tokens_per_camera} visual tokens per camera of {cfg.name}")
    for name, v in (("vision_layers", vision_layers), ("llm_layers", llm_layers), ("steps", steps)):
        if v is not None:
            _check(name, v, 1)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch.cuda.is_available() is False")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
    torch_dtype = getattr(torch, dtype)
    if steps is not None and cfg.head == "flow":
        cfg = dataclasses.replace(cfg, denoise_steps=steps)

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # pinned for this call (export OMP_NUM_THREADS too, before starting Python)
    try:
        return _bench(cfg, model, ks, cams, prompt, vision_layers, llm_layers, repeats, warmup, device, torch_dtype,
                      dtype, seed, progress, after_layers)  # fmt: skip
    finally:
        torch.set_num_threads(previous)


def _bench(cfg, model, ks, cams, prompt, vision_layers, llm_layers, repeats, warmup, device, torch_dtype, dtype,
           seed, progress, after_layers) -> dict[str, Any]:  # fmt: skip
    """The body of :func:`bench_latency`, run with the thread count pinned."""
    torch.manual_seed(seed)
    say = progress or (lambda _msg: None)
    say(f"building {cfg.name} (vision layers {vision_layers}, llm layers {llm_layers}) on {device}")
    m = VLAModules(
        cfg, vision_layers=vision_layers, llm_layers=llm_layers, expert_layers=llm_layers, attention="sdpa",
        device=device, dtype=torch_dtype,
    ).eval()  # fmt: skip
    from ..grids import GridSampler
    from ..patch import get_adapter, unpatch
    from ..patch import transformers as patch_transformers

    Key = tuple[int | None, int | None]  # (K, L): (None, None) dense, (K, None) GridS after the projector
    if after_layers:
        placed = [(k, lay) for k in dict.fromkeys(ks) for lay in dict.fromkeys(after_layers)]
        configs: list[Key] = [(None, None), *placed]
    else:
        configs = [(None, None)] + [(k, None) for k in dict.fromkeys(ks) if k != cfg.tokens_per_camera]
    samplers = {
        k: GridSampler(cfg.width, k, grid_size=cfg.grid).to(device=device, dtype=torch_dtype).eval()
        for k, lay in configs
        if k is not None and lay is None
    }
    built = [_depth(e) for e in m.encoders]

    def split_of(layer: int) -> list[int]:
        """Where the built (possibly shallower) encoders are split for a real-depth ``layer``."""
        return [min(layer, spec.layers) * b // spec.layers for spec, b in zip(cfg.encoders, built)]

    project_k: Callable[[torch.Tensor], torch.Tensor] = m.project
    if after_layers and cfg.projector == "pixel-shuffle":  # K sampled tokens: a plain Linear per token
        fused = sum(e.hidden for e in cfg.encoders)
        project_k = torch.nn.Linear(fused, cfg.width, bias=False).to(device=device, dtype=torch_dtype)
    pixels = m.pixels(cams)
    is_cuda = torch.device(device).type == "cuda"

    def clock() -> float:
        if is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    stamps: dict[str, float] = {}

    def stamp(name: str) -> Callable[..., None]:
        def hook(*_args: Any) -> None:
            stamps[name] = clock()

        return hook

    for i, enc in enumerate(m.encoders):
        enc.register_forward_pre_hook(stamp(f"start{i}"))
        enc.register_forward_hook(stamp(f"end{i}"))

    def run(key: Key) -> tuple[dict[str, float], dict[str, list[float]]]:
        k, layer = key
        if layer is not None:  # patch outside the timed section; a fresh random GridS per call
            for i, (enc, split) in enumerate(zip(m.encoders, split_of(layer))):
                patch_transformers(enc, k, after_layer=split, prefix="keep")
                sampler = get_adapter(enc).sampler.to(dtype=torch_dtype).eval()
                sampler.register_forward_pre_hook(stamp(f"grids_start{i}"))
                sampler.register_forward_hook(stamp(f"grids_end{i}"))
        stamps.clear()
        try:
            with torch.inference_mode():
                t = [clock()]
                feats = m.vision(pixels)
                t.append(clock())
                tokens = m.project(feats) if layer is None else project_k(feats)
                t.append(clock())
                if k is not None and layer is None:
                    tokens = samplers[k](tokens)[0]
                t.append(clock())
                h, cache = m.run_llm(m.prefix_inputs(tokens, prompt))
                t.append(clock())
                m.actions(h, cache)
                t.append(clock())
        finally:
            if layer is not None:
                for enc in m.encoders:
                    unpatch(enc)
        ms = {p: 1e3 * (t[i + 1] - t[i]) for i, p in enumerate(PARTS)}
        n = len(m.encoders)
        seg = {"tower": [1e3 * (stamps[f"end{i}"] - stamps[f"start{i}"]) for i in range(n)]}
        if layer is not None:
            grids = [1e3 * (stamps[f"grids_end{i}"] - stamps[f"grids_start{i}"]) for i in range(n)]
            ms["grids"] = sum(grids)
            ms["vision"] -= ms["grids"]
            seg["before_grids"] = [1e3 * (stamps[f"grids_start{i}"] - stamps[f"start{i}"]) for i in range(n)]
            seg["after_grids"] = [1e3 * (stamps[f"end{i}"] - stamps[f"grids_end{i}"]) for i in range(n)]
        return ms, seg

    times: dict[Key, list[tuple[dict[str, float], dict[str, list[float]]]]] = {c: [] for c in configs}
    for r in range(warmup + repeats):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for key in order:
            out = run(key)
            if r >= warmup:
                times[key].append(out)
        say(f"round {r + 1}/{warmup + repeats}{' (warm-up)' if r < warmup else ''} done")

    enc_depth = sum(e.layers for e in cfg.encoders)
    enc_built = sum(built)
    llm_built = len(m.llm.layers)
    scale = {
        "vision": enc_depth / enc_built,
        "projector": 1.0,
        "grids": 1.0,
        "llm_prefix": cfg.llm.layers / llm_built,
        "action": 1.0,
    }
    if cfg.head == "flow":
        real = get_config(model)
        scale["action"] = (real.expert.layers / len(m.expert.layers)) * (real.denoise_steps / cfg.denoise_steps)
    elif cfg.head == "autoregressive":
        scale["action"] = cfg.llm.layers / llm_built

    def seg_median(key: Key, name: str) -> list[float]:
        return [statistics.median(x[1][name][i] for x in times[key]) for i in range(len(built))]

    per_layer_n = [t / b for t, b in zip(seg_median((None, None), "tower"), built)]  # dense: ms per layer on N
    rows = []
    for key in configs:
        k, layer = key
        med = {p: statistics.median(x[0][p] for x in times[key]) for p in PARTS}
        totals = [sum(x[0].values()) for x in times[key]]
        row: dict[str, Any] = {"k": k, "label": "dense" if k is None else str(k), "median_ms": med}
        if layer is None:
            vision_extrap = med["vision"] * scale["vision"]
        else:
            splits = split_of(layer)
            before, after = seg_median(key, "before_grids"), seg_median(key, "after_grids")
            vision_extrap = 0.0
            for spec, b, s, tn, pre, post in zip(cfg.encoders, built, splits, per_layer_n, before, after):
                real_l = min(layer, spec.layers)
                vision_extrap += pre + (real_l - s) * tn + (post * (spec.layers - real_l) / (b - s) if b > s else 0.0)
            row |= {"after_layer": layer, "split_built": splits, "vision_extrapolated_ms": vision_extrap}
        row |= {
            "total_ms": sum(med.values()),
            "all_total_ms": totals,
            "min_total_ms": min(totals),
            "extrapolated_total_ms": vision_extrap + sum(med[p] * scale[p] for p in PARTS if p != "vision"),
        }
        rows.append(row)
    dense = rows[0]
    for row in rows:
        row["speedup"] = dense["total_ms"] / row["total_ms"]
        row["min_speedup"] = dense["min_total_ms"] / row["min_total_ms"]
        row["extrapolated_speedup"] = dense["extrapolated_total_ms"] / row["extrapolated_total_ms"]
        if row["k"] is not None:
            vis = row["median_ms"]["vision"]
            row["grids_over_vision"] = row["median_ms"]["grids"] / vis
            vis_extrap = row.get("vision_extrapolated_ms", vis * scale["vision"])
            row["grids_over_vision_extrapolated"] = row["median_ms"]["grids"] / vis_extrap
    info = {
        "model": cfg.name,
        "cameras": cams,
        "prompt_tokens": prompt,
        "vision_layers": [_depth(e) for e in m.encoders],
        "vision_layers_real": [e.layers for e in cfg.encoders],
        "llm_layers": llm_built,
        "llm_layers_real": cfg.llm.layers,
        "expert_layers": len(m.expert.layers) if cfg.head == "flow" else None,
        "denoise_steps": cfg.denoise_steps if cfg.head == "flow" else None,
        "repeats": repeats,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "device": _device_name(device),
        "dtype": dtype,
        "seed": seed,
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "extrapolation_scale": scale,
    }
    if after_layers:
        info["after_layers"] = list(dict.fromkeys(after_layers))
    return {"info": info, "rows": rows}


def _depth(encoder: torch.nn.Module) -> int:
    """Layers an HF vision encoder was built with (from its config: module names differ across versions)."""
    return int(encoder.config.num_hidden_layers)


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"


def format_latency(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`bench_latency`'s result."""
    info, rows = result["info"], result["rows"]
    lines = [
        f"{info['model']}: batch 1, cameras={info['cameras']}, prompt={info['prompt_tokens']}, "
        f"device={info['device']}, dtype={info['dtype']}, threads={info['threads']}, seed={info['seed']}, "
        f"{info['date']}",
        f"measured depth: vision {info['vision_layers']} of {info['vision_layers_real']} layers, "
        f"LLM {info['llm_layers']} of {info['llm_layers_real']}"
        + (
            f", expert {info['expert_layers']} layers x {info['denoise_steps']} steps"
            if info["expert_layers"] is not None
            else ""
        )
        + f"; median of {info['repeats']} interleaved rounds after {info['warmup']} warm-up",
    ]
    inside = "after_layers" in info
    fmt = "{:>6} {:>9} {:>9} {:>7} {:>10} {:>9} {:>9} {:>8} {:>9} {:>8} {:>12} {:>8} {:>11}"
    if inside:
        fmt = "{:>6} {:>4} {:>6} " + fmt[6:]
    head = ["K/cam", "vision", "proj", "grids", "llm_prefix", "action", "total ms", "speedup", "min ms", "speedup",
            "extrap. ms", "speedup", "grids/vis"]  # fmt: skip
    if inside:
        head[1:1] = ["L", "built"]
    lines.append(fmt.format(*head))
    for r in rows:
        m = r["median_ms"]
        gv = "-" if r["k"] is None else f"{100 * r['grids_over_vision_extrapolated']:.2f}%"
        cells = [
            r["label"], f"{m['vision']:.1f}", f"{m['projector']:.1f}", f"{m['grids']:.2f}", f"{m['llm_prefix']:.1f}",
            f"{m['action']:.1f}", f"{r['total_ms']:.1f}", f"{r['speedup']:.2f}x", f"{r['min_total_ms']:.1f}",
            f"{r['min_speedup']:.2f}x", f"{r['extrapolated_total_ms']:.0f}", f"{r['extrapolated_speedup']:.2f}x", gv,
        ]  # fmt: skip
        if inside:
            split = "/".join(str(x) for x in r["split_built"]) if "after_layer" in r else "-"
            cells[1:1] = ["-" if "after_layer" not in r else str(r["after_layer"]), split]
        lines.append(fmt.format(*cells))
    lines.append(
        "components and total: medians; min ms = fastest round (least disturbed by other processes); "
        "extrap. = median component times scaled linearly to the real depth and step count (an estimate); "
        "grids/vis = GridS time over the full-depth (extrapolated) vision encoder time"
    )
    if inside:
        lines.append(
            "L = GridS inside the encoder before real layer L; built = where the measured (reduced) encoder was "
            "split, in built layers; the projector runs on K tokens (SmolVLA: a plain Linear per token)"
        )
    return "\n".join(lines)
