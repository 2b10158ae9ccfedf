"""K distinct patches drawn uniformly at random on every call (a content-blind baseline)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..sampling import patch_centers
from .base import TokenReducer
from .registry import register_reducer


@register_reducer("random")
class RandomPatchReducer(TokenReducer):
    """Keep K distinct random patches per sample, in raster order. Seed with ``torch.manual_seed``."""

    def reduce(self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None):
        b, n, c = tokens.shape
        idx = torch.rand(b, n, device=tokens.device).argsort(dim=1)[:, : self.k].sort(dim=1).values
        out = torch.gather(tokens, 1, idx.unsqueeze(-1).expand(b, self.k, c))
        coords = patch_centers(grid_size, self.align_corners, device=tokens.device)[idx]
        return out, coords, {"indices": idx}
