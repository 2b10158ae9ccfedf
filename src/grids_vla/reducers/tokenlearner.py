"""TokenLearner (Ryoo et al., 2021; used in RT-1): K learned spatial attention maps pool the tokens.

Each output token is a softmax-weighted average of the input tokens under its own spatial map,
predicted from the tokens by a small MLP. Its ``coords`` are the maps' centroids.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..sampling import patch_centers
from .base import TokenReducer
from .registry import register_reducer


@register_reducer("tokenlearner")
class TokenLearnerReducer(TokenReducer):
    """K attention maps over the ``H*W`` tokens, each pooling one output token."""

    def __init__(self, dim: int, k: int, *, hidden: int = 256, **kwargs: Any) -> None:
        super().__init__(dim, k, **kwargs)
        self.attn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, k))

    def reduce(self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None):
        maps = self.attn(tokens.to(self.attn[1].weight.dtype)).transpose(1, 2).softmax(dim=-1)  # (B, K, N)
        out = torch.bmm(maps.to(tokens.dtype), tokens)
        centres = patch_centers(grid_size, self.align_corners, dtype=maps.dtype, device=tokens.device)
        return out, maps @ centres, {"attention": maps}
