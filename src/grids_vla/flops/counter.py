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

GridS inside the encoder (``after_layer=L``): the first ``L`` encoder layers run on all ``N`` patch tokens,
GridS resamples the hidden states entering layer ``L`` (at the encoder's width), and the remaining layers,
the final norm and the projector run on ``K`` tokens per camera (plus CLS / register tokens, which travel
through the encoder and are dropped after it). It is counted by splitting a real (meta-device) encoder with
the project's own ``grids_vla.patch.transformers``. Its two limits (:func:`bound_flops`) are a free encoder at
the same ``K`` (what no in-encoder placement can beat) and zero visual tokens with no encoder at all.
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
    "bound_flops",
    "count_flops",
    "model_flops",
    "placement_notes",
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
    limit). ``after_layer`` is set when GridS sits inside the encoder (see :func:`model_flops`);
    ``bound`` names the limit rows of :func:`bound_flops` (``"free-encoder"``, ``"no-vision"``).
    ``action`` is the whole action head: expert x denoising steps (flow), the decoding steps
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
    after_layer: int | None = None
    bound: str | None = None

    @property
    def total(self) -> float:
        return float(sum(self.components.values()))

    @property
    def label(self) -> str:
        if self.bound == "no-vision":
            return "zero"
        if self.k is None:
            return "dense"
        return "limit" if self.k == 0 else str(self.k)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("after_layer", "bound"):  # only the in-encoder tables carry these keys
            if d[key] is None:
                del d[key]
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


@functools.cache
def _encoder_split(spec: ViTSpec, cameras: int, k: int) -> tuple[int, int]:
    """(GridS FLOPs at the encoder's width, FLOPs of one encoder layer on prefix + K tokens), ``cameras`` images.

    A 1-layer meta build is split before its layer with ``grids_vla.patch.transformers`` (the adapter a user
    would install), so the count is what that encoder runs: patch embedding on N, GridS, one layer on P + K.
    """
    from ..patch import get_adapter
    from ..patch import transformers as patch_transformers

    with _META:
        enc = spec.build(1, "eager")
    patch_transformers(enc, k, after_layer=0, prefix="keep")
    x = _empty(cameras, 3, spec.image_size, spec.image_size)
    split = count_flops(lambda: enc(pixel_values=x))
    tokens = _empty(cameras, spec.prefix_tokens + spec.grid * spec.grid, spec.hidden)
    grids = count_flops(get_adapter(enc).sampler, tokens, (spec.grid, spec.grid))
    base, _ = _encoder_counts(spec, cameras)
    return grids, split - base - grids


@functools.cache
def _projector_on(cfg: VLAConfig, cameras: int, k: int) -> int:
    """The projector on K sampled tokens per camera (GridS inside the encoder).

    SmolVLA's pixel-shuffle connector folds 4 x 4 neighbours into channels; on K sampled tokens it is counted as a
    plain ``Linear(encoder width -> LLM width)`` of each token: the plugin's ``grids_connector="point"`` design, whose
    connector weight is summed over the 16 slots (one token per point in the encoder).
    """
    fused = sum(e.hidden for e in cfg.encoders)
    feats = _empty(cameras, k, fused)
    if cfg.projector == "pixel-shuffle":
        with _META:
            proj = torch.nn.Linear(fused, cfg.width, bias=False)
        return count_flops(proj, feats)
    return count_flops(_meta_model(cfg).project, feats)


# ---- the model-level count ----------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def encoder_depth(cfg: VLAConfig) -> int:
    """The deepest vision encoder's layer count: ``after_layer`` ranges over ``[0, encoder_depth]``."""
    return max(e.layers for e in cfg.encoders)


def check_placement(cfg: VLAConfig, k: Any, after_layer: Any, *, k_name: str = "k",
                    layer_name: str = "after_layer") -> None:
    """Refuse ``after_layer`` outside ``[0, depth]`` and a K outside ``[1, tokens of the encoder's grid]``.

    ``k_name`` / ``layer_name`` name the setting in the one-line error (the CLI passes its flags).
    """
    depth = encoder_depth(cfg)
    names = "+".join(type_name(e) for e in cfg.encoders)
    if isinstance(after_layer, bool) or not isinstance(after_layer, int) or not 0 <= after_layer <= depth:
        raise ValueError(
            f"{layer_name} {after_layer!r} is outside [0, {depth}]: {cfg.name}'s vision encoder ({names}) has "
            f"{depth} layers (0: GridS before the first layer, {depth}: after the last)"
        )
    grid = cfg.encoders[0].grid
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= grid * grid:
        raise ValueError(
            f"{k_name} {k!r} is outside [1, {grid * grid}]: inside {cfg.name}'s vision encoder GridS resamples "
            f"a {grid}x{grid} grid of {grid * grid} patch tokens per camera"
        )


def type_name(spec: ViTSpec) -> str:
    """``SigLIP`` / ``DINOv2`` for the notes and errors."""
    return "SigLIP" if spec.kind == "siglip" else "DINOv2"


def _resolve(model: str | VLAConfig, cameras: int | None, prompt_tokens: int | None,
             accounting: str) -> tuple[VLAConfig, int, int]:
    cfg = get_config(model) if isinstance(model, str) else model
    if accounting not in ("full", "paper"):
        raise ValueError(f"accounting must be 'full' or 'paper', got {accounting!r}")
    cams = _check_int("cameras", cfg.default_cameras if cameras is None else cameras, 1)
    prompt = _check_int("prompt_tokens", cfg.default_prompt_tokens if prompt_tokens is None else prompt_tokens, 0)
    return cfg, cams, prompt


def _downstream(cfg: VLAConfig, n: int, full: bool) -> tuple[int, int, int]:
    """(LLM prefix incl. state projection, action head, action steps) for a prefix of ``n`` tokens."""
    depth = cfg.llm.layers if full else 1
    llm = depth * _llm_layer(cfg, n) + _small(cfg, "state")
    if cfg.head == "flow":
        assert cfg.expert is not None
        base, kinds = _flow_counts(cfg, n)
        if full:
            per_step = base + sum(kinds[cfg.expert_kind(i)] for i in range(cfg.expert.layers))
        else:
            per_step = base + kinds[cfg.expert_kind(0)]
        steps = cfg.denoise_steps if full else 1
        return llm, steps * per_step, steps
    if cfg.head == "autoregressive":
        steps = cfg.action_dim - 1 if full else 1
        lm = _small(cfg, "lm_head")
        return llm, lm + sum(depth * _llm_layer(cfg, 1, n + i) + lm for i in range(steps)), steps
    return llm, _small(cfg, "oft_head"), 1


def model_flops(
    model: str | VLAConfig,
    k: int | None = None,
    *,
    cameras: int | None = None,
    prompt_tokens: int | None = None,
    accounting: Accounting = "full",
    after_layer: int | None = None,
) -> FlopBreakdown:
    """FLOPs of one batch-1 inference call of ``model`` with GridS at ``k`` tokens per camera.

    ``k=None`` (or ``k`` equal to the dense token count) is the dense model without GridS; ``k=0`` is
    the zero-visual-token limit. ``cameras`` and ``prompt_tokens`` default to the model's
    (pi0: 3 / 48, pi0.5: 3 / 200, SmolVLA: 2 / 48, OpenVLA: 1 / 32, OpenVLA-OFT: 2 / 32).

    ``after_layer=L`` puts GridS inside the vision encoder, at the input of layer ``L`` (``0``: right after
    the patch embedding; the depth: after the last layer, before the final norm): ``L`` layers run on all
    patch tokens, the rest on ``K`` (``k`` from 1 to the encoder grid's token count, required), GridS works
    at the encoder's width and the projector sees ``K`` tokens per camera. With two fused encoders
    (OpenVLA) each gets its own GridS and splits at ``min(L, its depth)``. In the ``paper`` accounting each
    of the two parts of the encoder stack counts one layer, as XLA counts two scans.
    """
    cfg, cams, prompt = _resolve(model, cameras, prompt_tokens, accounting)
    full = accounting == "full"
    if after_layer is not None:
        check_placement(cfg, k, after_layer)
        assert k is not None
        comp: dict[str, float] = {"vision": 0, "projector": _projector_on(cfg, cams, k), "grids": 0}
        for enc in cfg.encoders:
            split = min(after_layer, enc.layers)
            base, layer_n = _encoder_counts(enc, cams)
            grids, layer_k = _encoder_split(enc, cams, k)
            if full:
                comp["vision"] += base + split * layer_n + (enc.layers - split) * layer_k
            else:
                comp["vision"] += base + (split > 0) * layer_n + (split < enc.layers) * layer_k
            comp["grids"] += grids
        n = cams * k + prompt + cfg.extra_prefix_tokens()
        comp["llm_prefix"], comp["action"], steps = _downstream(cfg, n, full)
        return FlopBreakdown(
            model=cfg.name, accounting=accounting, k=k, cameras=cams, prompt_tokens=prompt,
            visual_tokens=cams * k, prefix_tokens=n, action_steps=steps, components=comp, after_layer=after_layer,
        )  # fmt: skip
    dense = cfg.tokens_per_camera
    if k is not None:
        _check_int("k", k, 0)
        if k > dense:
            raise ValueError(f"k={k} exceeds the {dense} visual tokens per camera of {cfg.name}")
        if k == dense:
            k = None
    per_cam = dense if k is None else k

    comp = {}
    vision = 0
    for enc in cfg.encoders:
        base, layer = _encoder_counts(enc, cams)
        vision += base + (enc.layers if full else 1) * layer
    comp["vision"] = vision
    comp["projector"] = _small(cfg, "projector", cams)
    comp["grids"] = cams * _small(cfg, "grids", k) if k else 0
    n = cams * per_cam + prompt + cfg.extra_prefix_tokens()
    comp["llm_prefix"], comp["action"], steps = _downstream(cfg, n, full)
    return FlopBreakdown(
        model=cfg.name, accounting=accounting, k=k, cameras=cams, prompt_tokens=prompt,
        visual_tokens=cams * per_cam, prefix_tokens=n, action_steps=steps, components=comp,
    )  # fmt: skip


def bound_flops(
    model: str | VLAConfig,
    k: int,
    *,
    cameras: int | None = None,
    prompt_tokens: int | None = None,
    accounting: Accounting = "full",
) -> FlopBreakdown:
    """The limits of GridS inside the encoder: what no placement ``after_layer=L`` can go below.

    ``k >= 1``: a free encoder at this K (bound ``"free-encoder"``): vision encoder and GridS cost nothing,
    the projector, the language model and the action head see ``K`` tokens per camera. ``k = 0``: zero
    visual tokens (bound ``"no-vision"``): no encoder, no projector, only the prompt (and state).
    """
    cfg, cams, prompt = _resolve(model, cameras, prompt_tokens, accounting)
    grid = cfg.encoders[0].grid
    _check_int("k", k, 0)
    if k > grid * grid:
        raise ValueError(f"k {k} is outside [0, {grid * grid}]: {cfg.name}'s encoder grid is {grid}x{grid}")
    comp: dict[str, float] = {"vision": 0, "projector": _projector_on(cfg, cams, k) if k else 0, "grids": 0}
    n = cams * k + prompt + cfg.extra_prefix_tokens()
    comp["llm_prefix"], comp["action"], steps = _downstream(cfg, n, accounting == "full")
    return FlopBreakdown(
        model=cfg.name, accounting=accounting, k=k, cameras=cams, prompt_tokens=prompt, visual_tokens=cams * k,
        prefix_tokens=n, action_steps=steps, components=comp, bound="free-encoder" if k else "no-vision",
    )  # fmt: skip


def flops_table(
    model: str | VLAConfig,
    ks: Iterable[int] = (16, 4, 1),
    *,
    cameras: int | None = None,
    prompt_tokens: int | None = None,
    accounting: Accounting = "full",
    after_layers: Iterable[int] | None = None,
) -> list[dict[str, Any]]:
    """Rows for dense, every K in ``ks`` (K equal to the dense count is the dense row) and the limit.

    Each row is :meth:`FlopBreakdown.to_dict` plus ``reduction`` (1 - total / dense) and
    ``fraction_of_limit`` (the reduction as a fraction of the limit's reduction).

    With ``after_layers`` (GridS inside the encoder, see :func:`model_flops`): dense, then for each K (largest
    first) one row per ``L`` (deepest first) and the free-encoder bound at that K, then the zero-visual-token
    row. These rows carry ``after_layer``, ``bound``, ``fraction_of_bound`` (the reduction over the reduction
    of the free-encoder row at the same K; ``None`` for dense and zero) and ``notes``, and no
    ``fraction_of_limit``.
    """
    cfg = get_config(model) if isinstance(model, str) else model
    ks = list(ks)
    kw = dict(cameras=cameras, prompt_tokens=prompt_tokens, accounting=accounting)
    if after_layers is not None:
        return _placement_table(cfg, ks, list(after_layers), kw)
    for k in ks:
        _check_int("k", k, 1)
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


def _placement_table(cfg: VLAConfig, ks: list[int], layers: list[int], kw: dict[str, Any]) -> list[dict[str, Any]]:
    if not layers:
        raise ValueError("after_layers is empty: give at least one layer L")
    for k in ks:
        for layer in layers:
            check_placement(cfg, k, layer)
    dense = model_flops(cfg, None, **kw)
    rows: list[tuple[FlopBreakdown, FlopBreakdown | None]] = [(dense, None)]
    for k in sorted(set(ks), reverse=True):
        free = bound_flops(cfg, k, **kw)
        rows += [(model_flops(cfg, k, after_layer=layer, **kw), free) for layer in sorted(set(layers), reverse=True)]
        rows.append((free, free))
    rows.append((bound_flops(cfg, 0, **kw), None))
    notes = placement_notes(cfg, kw["accounting"])
    out = []
    for b, free in rows:
        d = b.to_dict()
        d["after_layer"], d["bound"] = b.after_layer, b.bound
        d["reduction"] = 1 - b.total / dense.total
        saving = None if free is None else dense.total - free.total
        d["fraction_of_bound"] = (dense.total - b.total) / saving if saving else None
        d["encoder_depth"] = encoder_depth(cfg)
        d["title"], d["head"], d["notes"] = cfg.title, cfg.head, notes
        out.append(d)
    return out


def placement_notes(cfg: VLAConfig, accounting: str = "full") -> list[str]:
    """What the rows of an in-encoder table count, for this model (printed under the table)."""
    depth, enc = encoder_depth(cfg), cfg.encoders[0]
    widths = " / ".join(f"{type_name(e)} {e.hidden}" for e in cfg.encoders)
    notes = [
        f"L = encoder layers run on all {enc.grid * enc.grid} patch tokens per camera; GridS ({widths} channels, the "
        f"encoder's width) then resamples K, and the other layers, the final norm and the projector run on K "
        f"tokens; L={depth} is GridS after the last layer.",
        "free = a free encoder at this K (encoder and GridS cost nothing; projector, LLM and action head see K "
        "tokens per camera), the bound for every L; zero = no visual tokens and no encoder at all. "
        "of bound = reduction / the free row's reduction at the same K.",
    ]
    if cfg.projector == "pixel-shuffle":
        notes.append(
            f"the pixel-shuffle connector folds {cfg.pixel_shuffle}x{cfg.pixel_shuffle} neighbouring patches; on K "
            f"sampled tokens it is counted as a plain Linear({enc.hidden} -> {cfg.width}) of each token, which is "
            f"what smolvla_grids runs with grids_connector='point' (the connector's weight summed over its "
            f"{cfg.pixel_shuffle * cfg.pixel_shuffle} slots); the default 'neighbourhood' design runs the layers "
            f"after L on {cfg.pixel_shuffle * cfg.pixel_shuffle} x K tokens and is not counted here."
        )
    if len(cfg.encoders) > 1:
        kept = {e: f", {e.prefix_tokens} CLS/register tokens kept" if e.prefix_tokens else "" for e in cfg.encoders}
        parts = ", ".join(f"{type_name(e)} ({e.layers} layers{kept[e]})" for e in cfg.encoders)
        notes.append(
            f"fused encoders {parts}: each gets its own GridS and splits at min(L, its depth); prefix tokens travel "
            "through the encoder and are dropped after it."
        )
    if accounting == "paper":
        notes.append("paper accounting: the layers before and after GridS are two stacks, each counted once.")
    return notes


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`flops_table` rows (GFLOPs = 1e9 FLOPs)."""
    if not rows:
        return ""
    r0 = rows[0]
    steps = r0["action_steps"]
    head = {"flow": f"expert x{steps}", "autoregressive": f"decode x{steps}", "parallel": "MLP head"}[r0["head"]]
    if "fraction_of_bound" in r0:
        return _format_placement(rows, head)
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


def _format_placement(rows: list[dict[str, Any]], head: str) -> str:
    """The in-encoder table: one row per (K, L), the free-encoder bound per K, dense and zero visual tokens."""
    r0 = rows[0]
    lines = [
        f"{r0['title']}",
        f"accounting={r0['accounting']}, cameras={r0['cameras']}, prompt tokens={r0['prompt_tokens']}, batch 1, "
        f"GFLOPs (1e9 FLOPs, FLOPs = 2 x multiply-adds); GridS inside the vision encoder after layer L of "
        f"{r0['encoder_depth']}",
    ]
    cols = ["K/cam", "L", "vis.tok", "prefix", "vision", "projector", "grids", "llm_prefix", head, "total", "reduct.",
            "of bound"]  # fmt: skip
    fmt = "{:>7} {:>5} {:>7} {:>6} {:>9} {:>9} {:>7} {:>10} {:>12} {:>9} {:>7} {:>8}"
    lines.append(fmt.format(*cols))
    for r in rows:
        c = r["components"]
        if r["bound"] == "free-encoder":
            where = "free"
        else:
            where = "-" if r["after_layer"] is None else str(r["after_layer"])
        frac = r["fraction_of_bound"]
        lines.append(
            fmt.format(
                r["label"], where, r["visual_tokens"], r["prefix_tokens"], f"{c['vision'] / 1e9:.2f}",
                f"{c['projector'] / 1e9:.2f}", f"{c['grids'] / 1e9:.3f}", f"{c['llm_prefix'] / 1e9:.2f}",
                f"{c['action'] / 1e9:.2f}", f"{r['total'] / 1e9:.2f}", f"{100 * r['reduction']:.1f}%",
                "-" if frac is None else f"{100 * frac:.1f}%",
            )  # fmt: skip
        )
    lines += [f"note: {n}" for n in r0["notes"]]
    return "\n".join(lines)
