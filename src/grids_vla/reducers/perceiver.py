"""Perceiver resampler (as in Flamingo / many VLMs): K learned queries cross-attend to the tokens.

One pre-norm cross-attention layer plus a feed-forward block, both residual on the queries. Its
``coords`` are the head-averaged attention centroids.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..sampling import patch_centers
from .base import TokenReducer
from .registry import register_reducer


@register_reducer("perceiver")
class PerceiverReducer(TokenReducer):
    """K learned latent queries, one cross-attention layer, one MLP."""

    def __init__(self, dim: int, k: int, *, num_heads: int | None = None, mlp_ratio: float = 2.0,
                 **kwargs: Any) -> None:
        super().__init__(dim, k, **kwargs)
        if num_heads is None:
            num_heads = next(h for h in (8, 4, 2, 1) if dim % h == 0)
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.queries = nn.Parameter(torch.randn(k, dim) * dim**-0.5)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def reduce(self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None):
        b, n, c = tokens.shape
        h, d = self.num_heads, c // self.num_heads
        x = tokens.to(self.q.weight.dtype)
        lat = self.queries.unsqueeze(0).expand(b, -1, -1)
        q = self.q(self.norm_q(lat)).view(b, self.k, h, d).transpose(1, 2)
        key, val = self.kv(self.norm_kv(x)).view(b, n, 2, h, d).permute(2, 0, 3, 1, 4)
        attn = (q @ key.transpose(-2, -1) * d**-0.5).softmax(dim=-1)  # (B, h, K, N)
        lat = lat + self.proj((attn @ val).transpose(1, 2).reshape(b, self.k, c))
        lat = lat + self.mlp(lat)
        mean_attn = attn.mean(dim=1)
        centres = patch_centers(grid_size, self.align_corners, dtype=mean_attn.dtype, device=tokens.device)
        return lat.to(tokens.dtype), mean_attn @ centres, {"attention": mean_attn}
