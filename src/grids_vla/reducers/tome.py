"""ToMe-style bipartite soft matching (Bolya et al., 2023), run down to exactly K tokens; no training.

Each round splits the tokens alternately into sets A and B, links every A token to its most similar
(cosine) B token, and merges the ``r`` most similar A tokens into their partners by size-weighted
averaging. Rounds repeat until K tokens remain; the number of rounds depends only on ``N`` and ``K``,
so the computation has static shapes. ``coords`` are the size-weighted centroids of the merged patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..sampling import patch_centers
from .base import TokenReducer
from .registry import register_reducer


def bipartite_merge(x: Tensor, size: Tensor, pos: Tensor, r: int) -> tuple[Tensor, Tensor, Tensor]:
    """One round: merge ``r`` tokens of ``x (B, N, C)``; ``size (B, N, 1)`` and ``pos (B, N, 2)`` follow."""
    a, b = x[:, ::2], x[:, 1::2]
    sim = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).transpose(1, 2)
    best, partner = sim.max(dim=-1)  # each A token's most similar B token
    order = best.argsort(dim=-1, descending=True)
    src, keep = order[:, :r], order[:, r:]
    dst = partner.gather(1, src)

    def merge(v: Tensor) -> Tensor:
        va, vb = v[:, ::2], v[:, 1::2]
        sa, sb = size[:, ::2], size[:, 1::2]
        moved = (va * sa).gather(1, src.unsqueeze(-1).expand(-1, -1, v.shape[-1]))
        summed = (vb * sb).scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, v.shape[-1]), moved)
        total = sb.scatter_add(1, dst.unsqueeze(-1), sa.gather(1, src.unsqueeze(-1)))
        kept = va.gather(1, keep.unsqueeze(-1).expand(-1, -1, v.shape[-1]))
        return torch.cat([kept, summed / total], dim=1)

    new_x, new_pos = merge(x), merge(pos)
    sa, sb = size[:, ::2], size[:, 1::2]
    new_size = torch.cat(
        [sa.gather(1, keep.unsqueeze(-1)), sb.scatter_add(1, dst.unsqueeze(-1), sa.gather(1, src.unsqueeze(-1)))], dim=1
    )
    return new_x, new_size, new_pos


@register_reducer("tome")
class ToMeReducer(TokenReducer):
    """Training-free merging of the ``H*W`` tokens down to K by repeated bipartite soft matching."""

    def reduce(self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None):
        b, n, _ = tokens.shape
        x = tokens
        size = tokens.new_ones(b, n, 1)
        pos = patch_centers(grid_size, self.align_corners, dtype=tokens.dtype, device=tokens.device)
        pos = pos.unsqueeze(0).expand(b, -1, -1)
        while n > self.k:
            r = min(n - self.k, (n + 1) // 2)
            x, size, pos = bipartite_merge(x, size, pos, r)
            n -= r
        return x, pos, {"sizes": size.squeeze(-1)}
