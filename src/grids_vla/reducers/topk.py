"""Discrete pruning: keep the K patches with the highest learned score.

Hard top-K has no gradient with respect to the scores, so the selected tokens are multiplied by a
straight-through gate ``1 + g - stop_grad(g)`` with ``g = sigmoid(score)``: the forward value is the
unchanged token, the backward pass teaches the scorer which tokens help. With ``gumbel=True`` the
ranking uses Gumbel-perturbed scores during training (exploration, as in Gumbel top-K sampling);
evaluation always ranks by the plain score.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..sampling import patch_centers
from .base import TokenReducer
from .registry import register_reducer


@register_reducer("topk")
class TopKReducer(TokenReducer):
    """Learned-score top-K token selection (the "discrete pruning" baseline); output in raster order."""

    def __init__(self, dim: int, k: int, *, hidden: int = 256, gumbel: bool = False, gumbel_tau: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(dim, k, **kwargs)
        self.scorer = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.gumbel = gumbel
        self.gumbel_tau = gumbel_tau

    def reduce(self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None):
        b, _, c = tokens.shape
        scores = self.scorer(tokens.to(self.scorer[1].weight.dtype)).squeeze(-1)  # (B, N)
        rank = scores.detach()
        if self.gumbel and self.training:
            u = torch.rand_like(rank).clamp(1e-6, 1 - 1e-6)
            rank = rank / self.gumbel_tau - torch.log(-torch.log(u))
        idx = rank.topk(self.k, dim=1).indices.sort(dim=1).values
        gate = torch.sigmoid(scores.gather(1, idx)).unsqueeze(-1)
        selected = torch.gather(tokens, 1, idx.unsqueeze(-1).expand(b, self.k, c))
        out = selected * (1 + gate - gate.detach()).to(selected.dtype)
        coords = patch_centers(grid_size, self.align_corners, device=tokens.device)[idx]
        return out, coords, {"scores": scores, "indices": idx}
