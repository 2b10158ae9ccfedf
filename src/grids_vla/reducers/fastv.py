"""FastV (Chen et al., 2024): drop the visual tokens that receive the least attention inside the LLM.

FastV is not a pre-transformer reducer: after layer ``prune_after`` of the downstream transformer it
ranks the visual tokens by the attention they received in that layer (averaged over heads and query
positions) and keeps the top ``keep``. A transformer calls :class:`FastVPruner` inside its layer loop:

    pruner = FastVPruner(prune_after=2, keep=16)
    for i, layer in enumerate(layers):
        hidden, attn = layer(hidden, need_weights=True)         # attn: (B, heads, L, L) probabilities
        hidden, visual, kept = pruner(i, hidden, attn, visual)  # visual: (start, count) of the image span

``kept`` holds each surviving token's original position, to gather position ids / masks with.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["FastVPruner", "fastv_scores", "fastv_prune"]


def fastv_scores(attn: Tensor, visual: tuple[int, int], query: Literal["all", "last"] = "all") -> Tensor:
    """Attention received by each visual token: ``attn (B, heads, L, L)`` -> ``(B, count)``."""
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be (B, heads, L, L) attention probabilities, got shape {tuple(attn.shape)}")
    start, count = visual
    if start < 0 or start + count > attn.shape[-1]:
        raise ValueError(f"visual span (start={start}, count={count}) lies outside the sequence of {attn.shape[-1]}")
    received = attn[..., start : start + count].float().mean(dim=1)  # (B, L, count)
    return received[:, -1] if query == "last" else received.mean(dim=1)


def fastv_prune(hidden: Tensor, attn: Tensor, visual: tuple[int, int], keep: int,
                query: Literal["all", "last"] = "all") -> tuple[Tensor, tuple[int, int], Tensor]:
    """Keep the ``keep`` most-attended visual tokens; return (hidden, new visual span, kept positions)."""
    b, length, d = hidden.shape
    start, count = visual
    if not 1 <= keep <= count:
        raise ValueError(f"keep must be in [1, {count}] (the visual tokens), got {keep}")
    top = fastv_scores(attn, visual, query).topk(keep, dim=1).indices.sort(dim=1).values + start
    before = torch.arange(start, device=hidden.device).expand(b, -1)
    after = torch.arange(start + count, length, device=hidden.device).expand(b, -1)
    kept = torch.cat([before, top, after], dim=1)
    return hidden.gather(1, kept.unsqueeze(-1).expand(-1, -1, d)), (start, keep), kept


class FastVPruner:
    """Prune visual tokens once, after transformer layer ``prune_after`` (0-based; FastV uses K = 2)."""

    def __init__(self, prune_after: int = 2, keep: int = 64, query: Literal["all", "last"] = "all") -> None:
        if prune_after < 0 or keep < 1:
            raise ValueError(f"need prune_after >= 0 and keep >= 1, got {prune_after} and {keep}")
        self.prune_after = prune_after
        self.keep = keep
        self.query = query

    def __call__(self, layer_index: int, hidden: Tensor, attn: Tensor | None,
                 visual: tuple[int, int]) -> tuple[Tensor, tuple[int, int], Tensor | None]:
        if layer_index != self.prune_after:
            return hidden, visual, None
        if attn is None:
            raise ValueError(f"FastV needs the attention probabilities of layer {layer_index}")
        return fastv_prune(hidden, attn, visual, self.keep, self.query)
