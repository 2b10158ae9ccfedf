"""The unpruned baseline: every spatial token goes downstream."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..sampling import patch_centers
from .base import TokenReducer
from .registry import register_reducer


@register_reducer("dense")
class DenseReducer(TokenReducer):
    """Identity over the ``H * W`` spatial tokens. ``k``, if given, must equal ``H * W`` at call time."""

    supports_oversample = True  # k is a nominal 1 here; the output length is always H * W

    def __init__(self, dim: int, k: int | None = None, **kwargs: Any) -> None:
        kwargs.pop("allow_oversample", None)  # meaningless here: k is nominal, so oversampling is always allowed
        super().__init__(dim, 1, allow_oversample=True, **kwargs)
        self.expected_k = k

    def num_output_tokens(self, grid_size: tuple[int, int] | None = None) -> int:
        hw = grid_size or self.grid_size
        if hw is None:
            raise ValueError("DenseReducer needs grid_size to know its output length")
        return hw[0] * hw[1] + (self.num_prefix_tokens if self.prefix == "keep" else 0)

    def reduce(self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None):
        n = grid_size[0] * grid_size[1]
        if self.expected_k is not None and self.expected_k != n:
            h, w = grid_size
            raise ValueError(f"DenseReducer(k={self.expected_k}) got a {h}x{w} grid of {n} tokens")
        centres = patch_centers(grid_size, self.align_corners, device=tokens.device)
        return tokens, centres.unsqueeze(0).expand(tokens.shape[0], -1, -1), {}
