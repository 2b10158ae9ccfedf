"""Five VLA architectures written in code, and one set of forward functions for counting and timing.

Nothing is downloaded: every config is spelled out here from the published model sizes, and the parts
are built from Hugging Face ``transformers`` classes (``SiglipVisionModel``,
``Dinov2WithRegistersModel``, ``GemmaModel``, ``LlamaModel``) with random weights, on any device
(``meta`` for FLOP counting, where no memory is allocated and nothing is computed).

The decoder stacks are run layer by layer by :func:`decoder_layer`, which uses the HF layer's own
sub-modules (norms, q/k/v/o projections, MLP) but writes the attention itself. This is what the
pi0 and SmolVLA implementations do too (the action expert attends to the VLM's keys and values),
and it keeps attention an explicit ``matmul`` so ``FlopCounterMode`` counts it (``attention="eager"``),
or a fused ``scaled_dot_product_attention`` for latency (``attention="sdpa"``).

Placement of GridS: by default after the projector, on the tokens the language model sees (pi0's
``embed_image`` output, 256 x 2048 per 224 px image); the vision encoder and projector then run at
full cost and only the language model and the action head see fewer tokens. The counter and the
latency benchmark can also put it inside the encoder (``after_layer``), by patching these encoders
with ``grids_vla.patch.transformers``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ViTSpec",
    "DecoderSpec",
    "VLAConfig",
    "VLAModules",
    "MODELS",
    "get_config",
    "decoder_layer",
]

Attention = Literal["eager", "sdpa"]


@dataclass(frozen=True)
class ViTSpec:
    """A ViT image encoder: ``siglip`` (no class token) or ``dinov2-reg`` (class + register tokens)."""

    kind: Literal["siglip", "dinov2-reg"]
    hidden: int
    intermediate: int
    layers: int
    heads: int
    patch: int
    image_size: int
    registers: int = 0

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch

    @property
    def prefix_tokens(self) -> int:
        """Non-patch tokens (class, registers) that are dropped after the encoder, as Prismatic does."""
        return 0 if self.kind == "siglip" else 1 + self.registers

    def build(self, num_layers: int, attention: Attention = "eager") -> nn.Module:
        """The HF model with ``num_layers`` layers on the current default device."""
        if self.kind == "siglip":
            from transformers import SiglipVisionConfig, SiglipVisionModel

            cfg = SiglipVisionConfig(
                hidden_size=self.hidden,
                intermediate_size=self.intermediate,
                num_hidden_layers=num_layers,
                num_attention_heads=self.heads,
                patch_size=self.patch,
                image_size=self.image_size,
                vision_use_head=False,
                attn_implementation=attention,
            )
            return SiglipVisionModel(cfg)
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        cfg = Dinov2WithRegistersConfig(
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=num_layers,
            num_attention_heads=self.heads,
            patch_size=self.patch,
            image_size=self.image_size,
            num_register_tokens=self.registers,
            attn_implementation=attention,
        )
        return Dinov2WithRegistersModel(cfg)


@dataclass(frozen=True)
class DecoderSpec:
    """A Gemma- or Llama-style decoder stack (grouped-query attention, gated MLP)."""

    kind: Literal["gemma", "llama"]
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def build(self, num_layers: int) -> nn.Module:
        """The HF model with ``num_layers`` layers; a 2-word vocabulary, since inputs are embeddings."""
        common = dict(
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=num_layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            head_dim=self.head_dim,
            vocab_size=2,
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
            attn_implementation="eager",
        )
        if self.kind == "gemma":
            from transformers import GemmaConfig, GemmaModel

            return GemmaModel(GemmaConfig(**common))
        from transformers import LlamaConfig, LlamaModel

        return LlamaModel(LlamaConfig(**common))


@dataclass(frozen=True)
class VLAConfig:
    """One VLA: encoders, projector, language model and action head, plus its default input sizes.

    ``head`` is ``"flow"`` (an action expert run ``denoise_steps`` times over the cached prefix),
    ``"autoregressive"`` (one token per action dimension, greedy decoding with a KV cache) or
    ``"parallel"`` (OpenVLA-OFT: empty action tokens in the prefix, one pass, an MLP regression head).
    ``paper_gflops`` holds the figures the GridS paper reports ((tokens per image, GFLOPs) pairs), shown
    for comparison only; no count is derived from them. The config is frozen and hashable, so counts
    can be cached per config.
    """

    name: str
    title: str
    encoders: tuple[ViTSpec, ...]
    projector: Literal["linear", "pixel-shuffle", "fused-mlp"]
    llm: DecoderSpec
    head: Literal["flow", "autoregressive", "parallel"]
    default_cameras: int
    default_prompt_tokens: int
    pixel_shuffle: int = 1
    expert: DecoderSpec | None = None
    expert_cross_every: int = 0  # SmolVLA: layers with index % 2 == 1 cross-attend to the prefix only
    time_cond: Literal["concat", "adarms", "none"] = "none"
    state_in_suffix: bool = False  # pi0: a state token in the expert's input
    state_in_prefix: bool = False  # SmolVLA / OFT: a projected state token in the prefix
    state_dim: int = 32
    action_dim: int = 32
    action_horizon: int = 1
    denoise_steps: int = 1
    vocab: int = 0  # autoregressive head: lm_head width
    paper_gflops: tuple[tuple[int, float], ...] = ()
    notes: str = ""

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid per camera after the projector (what GridS resamples)."""
        g = self.encoders[0].grid // self.pixel_shuffle
        return (g, g)

    @property
    def tokens_per_camera(self) -> int:
        h, w = self.grid
        return h * w

    @property
    def width(self) -> int:
        """Channel size of the visual tokens GridS sees (the language model width)."""
        return self.llm.hidden

    @property
    def parallel_action_tokens(self) -> int:
        return self.action_horizon * self.action_dim if self.head == "parallel" else 0

    def extra_prefix_tokens(self) -> int:
        """Prefix tokens besides images and prompt: a state token, OFT's empty action tokens."""
        return int(self.state_in_prefix) + self.parallel_action_tokens

    def expert_kind(self, layer: int) -> Literal["self", "cross"]:
        """Attention of action-expert layer ``layer``: joint over prefix + suffix, or prefix-only cross."""
        if self.expert_cross_every and layer % self.expert_cross_every != 0:
            return "cross"
        return "self"


_SIGLIP_SO400M_224 = ViTSpec("siglip", 1152, 4304, 27, 16, 14, 224)
_GEMMA_2B = DecoderSpec("gemma", 2048, 16384, 18, 8, 1, 256)
_GEMMA_300M = DecoderSpec("gemma", 1024, 4096, 18, 8, 1, 256)
_LLAMA2_7B = DecoderSpec("llama", 4096, 11008, 32, 32, 32, 128)
_DINOV2_L_REG = ViTSpec("dinov2-reg", 1024, 4096, 24, 16, 14, 224, registers=4)

MODELS: dict[str, VLAConfig] = {
    "pi0": VLAConfig(
        name="pi0",
        title="pi0 (PaliGemma-3B + Gemma-300M action expert, flow matching)",
        encoders=(_SIGLIP_SO400M_224,),
        projector="linear",
        llm=_GEMMA_2B,
        head="flow",
        expert=_GEMMA_300M,
        time_cond="concat",
        state_in_suffix=True,
        action_horizon=50,
        denoise_steps=10,
        default_cameras=3,
        default_prompt_tokens=48,
        paper_gflops=((256, 216.01), (16, 51.65), (4, 43.61)),
        notes="openpi: 3 camera slots (a missing camera is a masked zero image, still encoded), prompt 48 tokens",
    ),
    "pi05": VLAConfig(
        name="pi05",
        title="pi0.5 (PaliGemma-3B + Gemma-300M expert with adaRMS time conditioning)",
        encoders=(_SIGLIP_SO400M_224,),
        projector="linear",
        llm=_GEMMA_2B,
        head="flow",
        expert=_GEMMA_300M,
        time_cond="adarms",
        action_horizon=10,
        denoise_steps=10,
        default_cameras=3,
        default_prompt_tokens=200,
        paper_gflops=((256, 249.76), (16, 83.84), (4, 75.73)),
        notes="openpi pi05_libero: 3 camera slots, prompt 200 tokens (state tokenised into the prompt), horizon 10",
    ),
    "smolvla": VLAConfig(
        name="smolvla",
        title="SmolVLA (SmolVLM2-500M, first 16 text layers, expert at 0.75x width)",
        encoders=(ViTSpec("siglip", 768, 3072, 12, 12, 16, 512),),
        projector="pixel-shuffle",
        pixel_shuffle=4,
        llm=DecoderSpec("llama", 960, 2560, 16, 15, 5, 64),
        head="flow",
        expert=DecoderSpec("llama", 720, 2048, 16, 15, 5, 64),
        expert_cross_every=2,
        time_cond="concat",
        state_in_prefix=True,
        action_horizon=50,
        denoise_steps=10,
        default_cameras=2,
        default_prompt_tokens=48,
        paper_gflops=((64, 306.78),),
        notes="LeRobot SmolVLA: 512 px, pixel shuffle x4 -> 64 tokens/camera, state token in the prefix",
    ),
    "openvla": VLAConfig(
        name="openvla",
        title="OpenVLA (Prismatic DINOv2 + SigLIP fused, Llama-2-7B, 7 action tokens)",
        encoders=(_SIGLIP_SO400M_224, _DINOV2_L_REG),
        projector="fused-mlp",
        llm=_LLAMA2_7B,
        head="autoregressive",
        action_dim=7,
        default_cameras=1,
        default_prompt_tokens=32,
        vocab=32064,
        paper_gflops=((256, 1956.19),),
        notes="1 camera; 7 action tokens decoded greedily with a KV cache; lm_head on the last position only",
    ),
    "openvla-oft": VLAConfig(
        name="openvla-oft",
        title="OpenVLA-OFT (OpenVLA backbone, parallel decoding of an 8-step chunk, L1 MLP head)",
        encoders=(_SIGLIP_SO400M_224, _DINOV2_L_REG),
        projector="fused-mlp",
        llm=_LLAMA2_7B,
        head="parallel",
        state_in_prefix=True,
        state_dim=8,
        action_dim=7,
        action_horizon=8,
        default_cameras=2,
        default_prompt_tokens=32,
        paper_gflops=((256, 3922.56),),
        notes="LIBERO setup: 2 cameras, proprio token, 56 empty action tokens, MLPResNet head; "
        "the discarded lm_head logits of the reference code are not counted",
    ),
}


def get_config(name: str) -> VLAConfig:
    """The config called ``name`` (case-insensitive; ``pi0.5`` is accepted for ``pi05``)."""
    key = name.lower().replace("pi0.5", "pi05").replace("_", "-")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[key]


def _rope(x: Tensor, offset: int) -> Tensor:
    """Rotary position embedding on ``(B, heads, n, d)`` (elementwise: no matmul FLOPs)."""
    d = x.shape[-1]
    inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    pos = torch.arange(offset, offset + x.shape[-2], device=x.device, dtype=torch.float32)
    ang = (pos[:, None] * inv[None, :]).to(x.dtype)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def _heads(x: Tensor, n_heads: int) -> Tensor:
    b, s, _ = x.shape
    return x.view(b, s, n_heads, -1).transpose(1, 2)


def _attend(q: Tensor, k: Tensor, v: Tensor, attention: Attention) -> Tensor:
    """Multi-head attention of ``q (B, H, s, d)`` over ``k, v (B, Hkv, n, d)``; no mask (same FLOPs)."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    if attention == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.matmul(scores.softmax(dim=-1), v)


class AdaRMSMod(nn.Module):
    """pi0.5's time conditioning of one norm: ``cond (B, W)`` -> scale, shift, gate (``W -> 3W`` Dense)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, 3 * width)

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        scale, shift, gate = self.dense(cond).unsqueeze(1).chunk(3, dim=-1)
        return x * (1 + scale) + shift, gate


def decoder_layer(
    layer: nn.Module,
    h: Tensor,
    *,
    heads: int,
    kv_heads: int,
    past: tuple[Tensor, Tensor] | None = None,
    mode: Literal["self", "cross"] = "self",
    offset: int = 0,
    ada: tuple[AdaRMSMod, AdaRMSMod] | None = None,
    cond: Tensor | None = None,
    attention: Attention = "eager",
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One Gemma/Llama decoder layer (HF sub-modules, explicit attention) on ``h (B, s, D)``.

    ``past`` holds keys and values ``(B, kv_heads, p, head_dim)`` of a prefix: in ``"self"`` mode the
    ``s`` queries attend to prefix + own keys (pi0's joint attention, a KV-cached decode step); in
    ``"cross"`` mode (SmolVLA's odd expert layers) they attend to the prefix only, whose keys and values
    this layer's ``k_proj``/``v_proj`` re-project. ``ada`` applies pi0.5's adaRMS modulation. Returns
    the new hidden states and this layer's own keys and values (for a cache).
    """
    attn = layer.self_attn
    x = layer.input_layernorm(h)
    gate1 = gate2 = None
    if ada is not None:
        x, gate1 = ada[0](x, cond)
    q = _rope(_heads(attn.q_proj(x), heads), offset)
    if mode == "cross":
        if past is None:
            raise ValueError("cross attention needs the prefix keys and values")
        b, _, p, _ = past[0].shape
        k = _heads(attn.k_proj(past[0].transpose(1, 2).reshape(b, p, -1)), kv_heads)
        v = _heads(attn.v_proj(past[1].transpose(1, 2).reshape(b, p, -1)), kv_heads)
        own = (k, v)
    else:
        k = _rope(_heads(attn.k_proj(x), kv_heads), offset)
        v = _heads(attn.v_proj(x), kv_heads)
        own = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
    out = _attend(q, k, v, attention)
    out = attn.o_proj(out.transpose(1, 2).reshape(h.shape[0], h.shape[1], -1))
    h = h + (out if gate1 is None else out * gate1)
    x = layer.post_attention_layernorm(h)
    if ada is not None:
        x, gate2 = ada[1](x, cond)
    out = layer.mlp(x)
    return h + (out if gate2 is None else out * gate2), own


class PixelShuffleProjector(nn.Module):
    """SmolVLM's connector: fold ``s x s`` neighbouring patches into channels, then one Linear."""

    def __init__(self, dim: int, out: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.proj = nn.Linear(dim * scale * scale, out, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        g, s = math.isqrt(n), self.scale
        x = x.view(b, g // s, s, g // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, (g // s) ** 2, s * s * c)
        return self.proj(x)


class MLPResNet(nn.Module):
    """OpenVLA-OFT's L1 regression head: Linear, 2 residual (LayerNorm, Linear, ReLU) blocks, Linear."""

    def __init__(self, in_dim: int, hidden: int, out: int, blocks: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.ReLU()) for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.fc1(x))
        for block in self.blocks:
            x = x + block(x)
        return self.fc2(self.norm(x))


def _time_embedding(t: Tensor, width: int) -> Tensor:
    """Sinusoidal embedding of the flow-matching time ``t (B,)`` -> ``(B, width)``."""
    half = width // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = t.float()[:, None] * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


class VLAModules(nn.Module):
    """The parts of one VLA at a chosen depth, with the forward pieces the counter and benchmark call.

    Args:
        cfg: the architecture.
        vision_layers / llm_layers / expert_layers: how many layers to build (``None``: the real depth).
            The FLOP counter builds 1-2 layers and scales; the latency benchmark uses reduced depths on CPU.
        attention: ``"eager"`` (explicit matmuls, counted) or ``"sdpa"`` (fused, for timing).
        device, dtype: where and how to build; ``"meta"`` allocates nothing.
    """

    def __init__(
        self,
        cfg: VLAConfig,
        *,
        vision_layers: int | None = None,
        llm_layers: int | None = None,
        expert_layers: int | None = None,
        attention: Attention = "eager",
        device: str | torch.device = "meta",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.attention = attention
        with torch.device(device):
            self.encoders = nn.ModuleList(
                e.build(e.layers if vision_layers is None else vision_layers, attention) for e in cfg.encoders
            )
            fused = sum(e.hidden for e in cfg.encoders)
            if cfg.projector == "linear":
                self.projector: nn.Module = nn.Linear(fused, cfg.width)
            elif cfg.projector == "pixel-shuffle":
                self.projector = PixelShuffleProjector(fused, cfg.width, cfg.pixel_shuffle)
            else:
                mid = 4 * fused
                self.projector = nn.Sequential(
                    nn.Linear(fused, mid), nn.GELU(), nn.Linear(mid, cfg.width), nn.GELU(),
                    nn.Linear(cfg.width, cfg.width),
                )  # fmt: skip
            self.llm = cfg.llm.build(cfg.llm.layers if llm_layers is None else llm_layers)
            self.state_proj = nn.Linear(cfg.state_dim, cfg.width) if cfg.state_in_prefix else None
            if cfg.head == "parallel":  # OFT's proprio projector (2 layers) and regression head
                self.state_proj = nn.Sequential(
                    nn.Linear(cfg.state_dim, cfg.width), nn.GELU(), nn.Linear(cfg.width, cfg.width)
                )
                self.action_head = MLPResNet(cfg.action_dim * cfg.width, cfg.width, cfg.action_dim)
            if cfg.head == "autoregressive":
                self.lm_head = nn.Linear(cfg.width, cfg.vocab, bias=False)
            if cfg.head == "flow":
                ex = cfg.expert
                assert ex is not None
                n = ex.layers if expert_layers is None else expert_layers
                self.expert = ex.build(n)
                for i, layer in enumerate(self.expert.layers):
                    if cfg.expert_kind(i) == "cross":  # SmolVLA re-projects the VLM's keys / values
                        layer.self_attn.k_proj = nn.Linear(cfg.llm.kv_dim, ex.kv_dim, bias=False)
                        layer.self_attn.v_proj = nn.Linear(cfg.llm.kv_dim, ex.kv_dim, bias=False)
                w = ex.hidden
                self.action_in = nn.Linear(cfg.action_dim, w)
                self.action_out = nn.Linear(w, cfg.action_dim)
                if cfg.time_cond == "concat":
                    self.time_in = nn.Linear(2 * w, w)
                else:
                    self.time_in = nn.Linear(w, w)
                    self.ada = nn.ModuleList(nn.ModuleList([AdaRMSMod(w), AdaRMSMod(w)]) for _ in range(n))
                    self.ada_final = AdaRMSMod(w)
                self.time_out = nn.Linear(w, w)
                self.suffix_state = nn.Linear(cfg.state_dim, w) if cfg.state_in_suffix else None
        self.to(dtype)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.llm.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    # -- vision side ------------------------------------------------------------------------------
    def vision(self, pixels: Tensor) -> Tensor:
        """Patch features of every encoder, concatenated on channels: ``(cams, H*W, sum C)``."""
        feats = []
        for spec, enc in zip(self.cfg.encoders, self.encoders):
            out = enc(pixel_values=pixels).last_hidden_state
            feats.append(out[:, spec.prefix_tokens :])
        return torch.cat(feats, dim=-1)

    def project(self, feats: Tensor) -> Tensor:
        """Projector: ``(cams, H*W, C_vis)`` -> ``(cams, tokens_per_camera, width)``."""
        return self.projector(feats)

    def pixels(self, cameras: int) -> Tensor:
        s = self.cfg.encoders[0].image_size
        return torch.randn(cameras, 3, s, s, device=self.device, dtype=self.dtype)

    # -- language model ---------------------------------------------------------------------------
    def prefix_inputs(self, visual: Tensor, prompt_tokens: int) -> Tensor:
        """Prefix embeddings ``(1, n, width)``: visual tokens, prompt, then state / empty action tokens."""
        cfg = self.cfg
        parts = [visual.reshape(1, -1, cfg.width)]
        parts.append(torch.randn(1, prompt_tokens, cfg.width, device=visual.device, dtype=visual.dtype))
        if self.state_proj is not None:
            state = torch.randn(1, 1, cfg.state_dim, device=visual.device, dtype=visual.dtype)
            parts.append(self.state_proj(state))
        if cfg.parallel_action_tokens:
            empty = torch.zeros(1, cfg.parallel_action_tokens, cfg.width, device=visual.device, dtype=visual.dtype)
            parts.append(empty)
        return torch.cat(parts, dim=1)

    def run_llm(
        self,
        h: Tensor,
        past: Sequence[tuple[Tensor, Tensor]] | None = None,
        layers: Sequence[int] | None = None,
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """The language model over ``h`` (optionally after cached ``past``); returns hidden states and the cache."""
        spec = self.cfg.llm
        idx = range(len(self.llm.layers)) if layers is None else layers
        cache = []
        for i in idx:
            prev = past[i] if past is not None else None
            offset = 0 if prev is None else prev[0].shape[2]
            h, own = decoder_layer(
                self.llm.layers[i], h, heads=spec.heads, kv_heads=spec.kv_heads, past=prev, offset=offset,
                attention=self.attention,
            )  # fmt: skip
            cache.append(own if prev is None else (torch.cat([prev[0], own[0]], 2), torch.cat([prev[1], own[1]], 2)))
        return self.llm.norm(h), cache

    # -- action heads -----------------------------------------------------------------------------
    def flow_step(
        self, cache: Sequence[tuple[Tensor, Tensor]], x_t: Tensor, t: Tensor, layers: Sequence[int] | None = None
    ) -> Tensor:
        """One denoising step of the action expert over the cached prefix: velocity ``(1, H, action_dim)``."""
        cfg, ex = self.cfg, self.cfg.expert
        assert ex is not None
        w = ex.hidden
        temb = _time_embedding(t, w).to(x_t.dtype)
        a = self.action_in(x_t)
        cond = None
        if cfg.time_cond == "concat":
            h = self.time_out(F.silu(self.time_in(torch.cat([a, temb[:, None].expand_as(a)], dim=-1))))
        else:
            cond = self.time_out(F.silu(self.time_in(temb)))
            h = a
        if self.suffix_state is not None:
            state = torch.zeros(x_t.shape[0], 1, cfg.state_dim, device=x_t.device, dtype=x_t.dtype)
            h = torch.cat([self.suffix_state(state), h], dim=1)
        idx = range(len(self.expert.layers)) if layers is None else layers
        for i in idx:
            prev = cache[i % len(cache)]
            h, _ = decoder_layer(
                self.expert.layers[i], h, heads=ex.heads, kv_heads=ex.kv_heads, past=prev, mode=cfg.expert_kind(i),
                offset=prev[0].shape[2], ada=tuple(self.ada[i]) if cond is not None else None, cond=cond,
                attention=self.attention,
            )  # fmt: skip
        h = self.expert.norm(h)
        if cond is not None:
            h, _ = self.ada_final(h, cond)
        return self.action_out(h[:, -cfg.action_horizon :])

    def sample_actions(self, cache: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        """Euler integration of the flow over ``denoise_steps`` steps, from noise to an action chunk."""
        cfg = self.cfg
        x = torch.randn(1, cfg.action_horizon, cfg.action_dim, device=self.device, dtype=self.dtype)
        dt = -1.0 / cfg.denoise_steps
        for s in range(cfg.denoise_steps):
            t = torch.full((1,), 1.0 + s * dt, device=x.device)
            x = x + dt * self.flow_step(cache, x, t)
        return x

    def decode_step(self, cache: Sequence[tuple[Tensor, Tensor]], h: Tensor, layers: Sequence[int] | None = None):
        """One greedy decoding step of one token ``h (1, 1, width)``: logits and the extended cache."""
        h, cache = self.run_llm(h, past=cache, layers=layers)
        return self.lm_head(h[:, -1:]), cache

    def decode_actions(self, h_last: Tensor, cache: list[tuple[Tensor, Tensor]]) -> Tensor:
        """OpenVLA: the prefill's last position gives token 1; ``action_dim - 1`` more decoding steps."""
        logits = self.lm_head(h_last)
        tokens = [logits.argmax(-1)]
        for _ in range(self.cfg.action_dim - 1):
            emb = torch.randn(1, 1, self.cfg.width, device=h_last.device, dtype=h_last.dtype)
            logits, cache = self.decode_step(cache, emb)
            tokens.append(logits.argmax(-1))
        return torch.cat(tokens, dim=-1)

    def actions(self, h: Tensor, cache: list[tuple[Tensor, Tensor]]) -> Tensor:
        """The configured action head after the prefix: flow sampling, greedy decoding or parallel decoding."""
        if self.cfg.head == "flow":
            return self.sample_actions(cache)
        if self.cfg.head == "autoregressive":
            return self.decode_actions(h[:, -1:], cache)
        return self.parallel_actions(h)

    def parallel_actions(self, h: Tensor) -> Tensor:
        """OpenVLA-OFT: the hidden states of the empty action tokens -> an ``(1, horizon, action_dim)`` chunk."""
        cfg = self.cfg
        act = h[:, -cfg.parallel_action_tokens :].reshape(1, cfg.action_horizon, cfg.action_dim * cfg.width)
        return self.action_head(act)
