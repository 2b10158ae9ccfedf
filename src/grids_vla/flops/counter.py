"""Per-component FLOPs of a VLA with dense visual tokens or GridS at any K, in two accountings.

What is counted: every matrix multiply and convolution that ``torch.utils.flop_counter.FlopCounterMode``
sees (FLOPs = 2 x multiply-adds), on meta tensors with explicit ("eager") attention, so attention
scores and the attention-weighted sum are included. Elementwise work (norms, softmax, activations,
RoPE, GridS's bilinear weighting) is not, which is the usual convention and the paper's.

How, and why it is fast: a layer's cost depends only on its input sizes, so each stack is counted
once with a 1- or 2-layer model and multiplied by its depth (vision encoders: the difference between
a 2-layer and a 1-layer build is one layer, the rest is patch embedding and final norm). The whole
five-model table takes seconds on a CPU and allocates no weights.

Two accountings:

``full``
    The real cost of one inference call at batch 1: every layer, every denoising / decoding step.
``paper``
    What the GridS paper's pi0 / pi0.5 figures are: XLA's ``cost_analysis()`` of a JAX program whose
    layer stacks are ``scan``-ned and whose denoising loop is a ``while`` loop, which counts each loop
    body once. So: every camera slot's patch embedding, projector and GridS, but one layer of each
    stack, and one denoising step (one decoding step for OpenVLA). With pi0's / pi0.5's defaults
    (3 camera slots, prompt 48 / 200) it reproduces the paper's six numbers. It is not a cost; it is
    here to show why the paper's reductions (~76 %) exceed the real ones.

The physical limit is the same call with zero visual tokens after the encoder: vision encoder and
projector still run, the language model and action head see only the prompt (and state). No
post-encoder pruning can go below it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch.utils.flop_counter import FlopCounterMode

from .arch import ViTSpec, VLAConfig, VLAModules, get_config

__all__ = [
    "COMPONENTS",
    "Accounting",
    "FlopBreakdown",
    "count_flops",
    "model_flops",
    "flops_table",
    "format_table",
]

Accounting = Literal["full", "paper"]
COMPONENTS = ("vision", "projector", "grids", "llm_prefix", "action")
_META = torch.device("meta")


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs (2 x multiply-adds) of matmuls and convolutions in ``fn(*args, **kwargs)``."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


@dataclass
class FlopBreakdown:
    """FLOPs of one inference call, per component.

    ``k`` is the GridS budget per camera (``None``: dense, no GridS; ``0``: the zero-visual-token
    limit). ``action`` is the whole action head: expert x denoising steps (flow), the decoding steps
    after the prefill (OpenVLA), or the regression MLP (OFT). ``llm_prefix`` includes any small
    state / proprio projection that feeds the prefix.
    """

    model: str
    accounting: Accounting
    k: int | None
    cameras: int
    prompt_tokens: int
    visual_tokens: int
    prefix_tokens: int
    action_steps: int
    components: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(self.components.values()))

    @property
    def label(self) -> str:
        if self.k is None:
            return "dense"
        return "limit" if self.k == 0 else str(self.k)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total"] = self.total
        d["label"] = self.label
        return d


# ---- cached meta-device builds and per-layer counts ---------------------------------------------


@functools.cache
def _meta_model(cfg: VLAConfig) -> VLAModules:
    """Meta-device parts with 1 LLM layer and 2 expert layers (SmolVLA alternates two layer kinds)."""
    return VLAModules(cfg, vision_layers=1, llm_layers=1, expert_layers=2, attention="eager", device=_META)


@functools.cache
def _encoder(spec: ViTSpec, layers: int) -> torch.nn.Module:
    with _META:
        return spec.build(layers, "eager")


@functools.cache
def _encoder_counts(spec: ViTSpec, cameras: int) -> tuple[int, int]:
    """(non-layer FLOPs, FLOPs of one layer) of an encoder on ``cameras`` images."""
    x = torch.empty(cameras, 3, spec.image_size, spec.image_size, device=_META)
    one = count_flops(lambda: _encoder(spec, 1)(pixel_values=x))
    two = count_flops(lambda: _encoder(spec, 2)(pixel_values=x))
    return one - (two - one), two - one


def _empty(*shape: int):
    return torch.empty(*shape, device=_META)


def _kv(spec_kv_heads: int, head_dim: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _empty(1, spec_kv_heads, length, head_dim), _empty(1, spec_kv_heads, length, head_dim)


@functools.cache
def _llm_layer(cfg: VLAConfig, n: int, past: int = 0) -> int:
    """One LLM layer over ``n`` new tokens after ``past`` cached ones."""
    m = _meta_model(cfg)
    spec = m.cfg.llm
    cache = [_kv(spec.kv_heads, spec.head_dim, past)] if past else None
    return count_flops(lambda: m.run_llm(_empty(1, n, spec.hidden), past=cache, layers=[0]))


@functools.cache
def _flow_counts(cfg: VLAConfig, prefix: int) -> tuple[int, dict[str, int]]:
    """(per-step FLOPs outside the expert layers, {layer kind: FLOPs of one such layer})."""
    m = _meta_model(cfg)
    spec = cfg.llm
    cache = [_kv(spec.kv_heads, spec.head_dim, prefix)] * 2
    x, t = _empty(1, cfg.action_horizon, cfg.action_dim), _empty(1)
    base = count_flops(lambda: m.flow_step(cache, x, t, layers=[]))
    kinds = {}
    for i in range(len(m.expert.layers)):
        kind = cfg.expert_kind(i)
        if kind not in kinds:
            kinds[kind] = count_flops(lambda i=i: m.flow_step(cache, x, t, layers=[i])) - base
    return base, kinds


@functools.cache
def _small(cfg: VLAConfig, part: str, arg: int = 0) -> int:
    """FLOPs of the small pieces: projector, state projection, lm_head, OFT head, GridS (arg = K)."""
    m = _meta_model(cfg)
    if part == "projector":
        enc = cfg.encoders[0]
        feats = _empty(arg, enc.grid * enc.grid, sum(e.hidden for e in cfg.encoders))
        return count_flops(m.project, feats)
    if part == "state":
        return count_flops(m.state_proj, _empty(1, 1, cfg.state_dim)) if m.state_proj is not None else 0
    if part == "lm_head":
        return count_flops(m.lm_head, _empty(1, 1, cfg.width))
    if part == "oft_head":
        return count_flops(m.parallel_actions, _empty(1, cfg.parallel_action_tokens, cfg.width))
    if part == "grids":
        from ..grids import GridSampler

        with _META:
            sampler = GridSampler(cfg.width, arg, grid_size=cfg.grid)
        return count_flops(sampler, _empty(1, cfg.tokens_per_camera, cfg.width))
    raise ValueError(part)


# ---- the model-level count ----------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def model_flops(
    model: str | VLAConfig,
    k: int | None = None,
    *,
    cameras: int | None = None,
    prompt_tokens: int | None = None,
    accounting: Accounting = "full",
) -> FlopBreakdown:
    """FLOPs of one batch-1 inference call of ``model`` with GridS at ``k`` tokens per camera.

    ``k=None`` (or ``k`` equal to the dense token count) is the dense model without GridS; ``k=0`` is
    the zero-visual-token limit. ``cameras`` and ``prompt_tokens`` default to the model's
    (pi0: 3 / 48, pi0.5: 3 / 200, SmolVLA: 2 / 48, OpenVLA: 1 / 32, OpenVLA-OFT: 2 / 32).
    """
    cfg = get_config(model) if isinstance(model, str) else model
    if accounting not in ("full", "paper"):
        raise ValueError(f"accounting must be 'full' or 'paper', got {accounting!r}")
    cams = _check_int("cameras", cfg.default_cameras if cameras is None else cameras, 1)
    prompt = _check_int("prompt_tokens", cfg.default_prompt_tokens if prompt_tokens is None else prompt_tokens, 0)
    dense = cfg.tokens_per_camera
    if k is not None:
        _check_int("k", k, 0)
        if k > dense:
            raise ValueError(f"k={k} exceeds the {dense} visual tokens per camera of {cfg.name}")
        if k == dense:
            k = None
    per_cam = dense if k is None else k
    full = accounting == "full"

    comp: dict[str, float] = {}
    vision = 0
    for enc in cfg.encoders:
        base, layer = _encoder_counts(enc, cams)
        vision += base + (enc.layers if full else 1) * layer
    comp["vision"] = vision
    comp["projector"] = _small(cfg, "projector", cams)
    comp["grids"] = cams * _small(cfg, "grids", k) if k else 0
    n = cams * per_cam + prompt + cfg.extra_prefix_tokens()
    depth = cfg.llm.layers if full else 1
    comp["llm_prefix"] = depth * _llm_layer(cfg, n) + _small(cfg, "state")

    if cfg.head == "flow":
        assert cfg.expert is not None
        base, kinds = _flow_counts(cfg, n)
        if full:
            per_step = base + sum(kinds[cfg.expert_kind(i)] for i in range(cfg.expert.layers))
        else:
            per_step = base + kinds[cfg.expert_kind(0)]
        steps = cfg.denoise_steps if full else 1
        comp["action"] = steps * per_step
    elif cfg.head == "autoregressive":
        steps = cfg.action_dim - 1 if full else 1
        lm = _small(cfg, "lm_head")
        comp["action"] = lm + sum(depth * _llm_layer(cfg, 1, n + i) + lm for i in range(steps))
    else:
        steps = 1
        comp["action"] = _small(cfg, "oft_head")
    return FlopBreakdown(
        model=cfg.name, accounting=accounting, k=k, cameras=cams, prompt_tokens=prompt,
        visual_tokens=cams * per_cam, prefix_tokens=n, action_steps=steps, components=comp,
    )  # fmt: skip


def flops_table(
    model: str | VLAConfig,
    ks: Iterable[int] = (16, 4, 1),
    *,
    cameras: int | None = None,
    prompt_tokens: int | None = None,
    accounting: Accounting = "full",
) -> list[dict[str, Any]]:
    """Rows for dense, every K in ``ks`` (K equal to the dense count is the dense row) and the limit.

    Each row is :meth:`FlopBreakdown.to_dict` plus ``reduction`` (1 - total / dense) and
    ``fraction_of_limit`` (the reduction as a fraction of the limit's reduction).
    """
    cfg = get_config(model) if isinstance(model, str) else model
    ks = list(ks)
    for k in ks:
        _check_int("k", k, 1)
    kw = dict(cameras=cameras, prompt_tokens=prompt_tokens, accounting=accounting)
    dense = model_flops(cfg, None, **kw)
    limit = model_flops(cfg, 0, **kw)
    rows, seen = [dense], {None, 0}
    for k in sorted(set(ks), reverse=True):
        b = model_flops(cfg, k, **kw)
        if b.k not in seen:
            seen.add(b.k)
            rows.append(b)
    rows.append(limit)
    out = []
    saving_limit = dense.total - limit.total
    for b in rows:
        d = b.to_dict()
        d["reduction"] = 1 - b.total / dense.total
        d["fraction_of_limit"] = (dense.total - b.total) / saving_limit if saving_limit > 0 else float("nan")
        d["paper_gflops"] = dict(cfg.paper_gflops).get(b.k if b.k is not None else cfg.tokens_per_camera)
        d["title"], d["head"] = cfg.title, cfg.head
        out.append(d)
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`flops_table` rows (GFLOPs = 1e9 FLOPs)."""
    if not rows:
        return ""
    r0 = rows[0]
    steps = r0["action_steps"]
    head = {"flow": f"expert x{steps}", "autoregressive": f"decode x{steps}", "parallel": "MLP head"}[r0["head"]]
    lines = [
        f"{r0['title']}",
        f"accounting={r0['accounting']}, cameras={r0['cameras']}, prompt tokens={r0['prompt_tokens']}, batch 1, "
        f"GFLOPs (1e9 FLOPs, FLOPs = 2 x multiply-adds)",
    ]
    cols = ["K/cam", "vis.tok", "prefix", "vision", "projector", "grids", "llm_prefix", head, "total", "reduct.",
            "of limit"]  # fmt: skip
    fmt = "{:>7} {:>7} {:>6} {:>9} {:>9} {:>7} {:>10} {:>12} {:>9} {:>7} {:>8}"
    lines.append(fmt.format(*cols))
    for r in rows:
        c = r["components"]
        lines.append(
            fmt.format(
                r["label"],
                r["visual_tokens"],
                r["prefix_tokens"],
                f"{c['vision'] / 1e9:.2f}",
                f"{c['projector'] / 1e9:.2f}",
                f"{c['grids'] / 1e9:.3f}",
                f"{c['llm_prefix'] / 1e9:.2f}",
                f"{c['action'] / 1e9:.2f}",
                f"{r['total'] / 1e9:.2f}",
                f"{100 * r['reduction']:.1f}%",
                "-" if r["label"] == "dense" else f"{100 * r['fraction_of_limit']:.1f}%",
            )  # fmt: skip
        )
    reported = [(r["label"], r["paper_gflops"]) for r in rows if r.get("paper_gflops")]
    if reported and r0["accounting"] == "paper":
        lines.append("the paper reports: " + ", ".join(f"{lab}: {v:.2f}" for lab, v in reported))
    return "\n".join(lines)
