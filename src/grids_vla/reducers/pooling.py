"""Uniform grid average pooling to K tokens (no learning, no content awareness)."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from ..sampling import image_fraction_to_coords, patch_centers
from .base import TokenReducer
from .registry import register_reducer


def pooling_grid(k: int, grid_size: tuple[int, int]) -> tuple[int, int]:
    """The ``(rows, cols)`` factorisation of K closest to the map's aspect ratio that fits in it."""
    h, w = grid_size
    best = None
    for rows in range(1, k + 1):
        if k % rows:
            continue
        cols = k // rows
        if rows > h or cols > w:
            continue
        err = abs(math.log((rows / cols) / (h / w)))
        if best is None or err < best[0]:
            best = (err, rows, cols)
    if best is None:
        raise ValueError(f"k={k} has no rows x cols factorisation that fits a {h}x{w} grid")
    return best[1], best[2]


@register_reducer("pool")
class UniformPoolReducer(TokenReducer):
    """Average-pool the ``H x W`` map onto a ``rows x cols = K`` grid (``F.adaptive_avg_pool2d``)."""

    def reduce(self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None):
        b, _, c = tokens.shape
        h, w = grid_size
        rows, cols = pooling_grid(self.k, grid_size)
        fmap = tokens.transpose(1, 2).reshape(b, c, h, w)
        pooled = F.adaptive_avg_pool2d(fmap, (rows, cols)).flatten(2).transpose(1, 2)
        centres = patch_centers((rows, cols), align_corners=False, device=tokens.device)
        coords = image_fraction_to_coords(centres, grid_size, self.align_corners)
        return pooled, coords.unsqueeze(0).expand(b, -1, -1), {"pool_grid": (rows, cols)}
