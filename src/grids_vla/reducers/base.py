"""The interface every token reducer implements: dense visual tokens in, K tokens out.

A reducer takes one camera's visual tokens as a feature map ``(B, C, H, W)`` / ``(B, H, W, C)`` or a
token sequence ``(B, N, C)`` with its grid shape, and returns :class:`ReducerOutput`. Input parsing and
validation live here once, so every peer rejects bad input with the same clear messages.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from .._checks import check_grid_size, check_int, resolve_layout

__all__ = ["ReducerOutput", "TokenReducer", "Layout", "PrefixMode"]

Layout = Literal["tokens", "nchw", "nhwc"]
PrefixMode = Literal["drop", "keep"]


class ReducerOutput(NamedTuple):
    """What a reducer returns.

    tokens: ``(B, K, C)``, or ``(B, P + K, C)`` when ``P`` prefix tokens are kept (prefix first).
    coords: ``(B, K, 2)`` ``(x, y)`` in ``[0, 1]`` where each output token looks (its sampling point,
        its patch centre, or its attention centroid), in the reducer's coordinate convention; ``None``
        where a reducer has no notion of location.
    aux: extra tensors for logging, losses or visualisation (e.g. attention maps, selection scores).
    """

    tokens: Tensor
    coords: Tensor | None
    aux: dict[str, Any]


class TokenReducer(nn.Module):
    """Base class: parses and validates the input, then calls :meth:`reduce` on ``(B, H*W, C)`` tokens.

    Args:
        dim: channel size ``C`` of the visual tokens.
        k: number of output tokens ``K`` (``>= 1``).
        grid_size: default ``(H, W)`` for token-sequence input (can be given per call instead).
        num_prefix_tokens: leading non-spatial tokens (CLS, registers) in a token sequence.
        prefix: ``"drop"`` or ``"keep"`` (passed through unchanged, placed before the K tokens).
        allow_oversample: permit ``K > H * W`` (only meaningful for samplers that can repeat points).
        check_finite: raise on NaN / inf input (costs a device sync; off by default).
        align_corners: coordinate convention of returned ``coords`` (see :mod:`grids_vla.sampling`).
    """

    #: Whether the reducer uses the ``cond`` argument. Those that do not reject it instead of ignoring it.
    accepts_cond: bool = False
    #: Whether ``K > H * W`` can make sense (a sampler may repeat points; a selector cannot).
    supports_oversample: bool = False

    def __init__(
        self,
        dim: int,
        k: int,
        *,
        grid_size: tuple[int, int] | None = None,
        num_prefix_tokens: int = 0,
        prefix: PrefixMode = "drop",
        allow_oversample: bool = False,
        check_finite: bool = False,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        check_int("dim", dim, minimum=1)
        check_int("k", k, minimum=1)
        check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        if prefix not in ("drop", "keep"):
            raise ValueError(f"prefix must be 'drop' or 'keep', got {prefix!r}")
        if grid_size is not None:
            grid_size = check_grid_size(grid_size)
        if allow_oversample and not self.supports_oversample:
            raise ValueError(f"{type(self).__name__} cannot return more tokens than the grid has (allow_oversample)")
        self.dim = dim
        self.k = k
        self.grid_size = grid_size
        self.num_prefix_tokens = num_prefix_tokens
        self.prefix = prefix
        self.allow_oversample = allow_oversample
        self.check_finite = check_finite
        self.align_corners = align_corners

    def num_output_tokens(self, grid_size: tuple[int, int] | None = None) -> int:
        """Tokens per image handed downstream (K, plus the prefix when it is kept)."""
        return self.k + (self.num_prefix_tokens if self.prefix == "keep" else 0)

    def forward(
        self,
        x: Tensor,
        grid_size: tuple[int, int] | None = None,
        *,
        cond: Tensor | None = None,
        layout: Layout | None = None,
    ) -> ReducerOutput:
        """Reduce one camera's tokens.

        Args:
            x: ``(B, N, C)`` tokens (``N = num_prefix_tokens + H * W``), or a 4-D feature map.
            grid_size: ``(H, W)`` of a token sequence; defaults to the constructor's.
            cond: optional ``(B, cond_dim)`` conditioning (language embedding, camera id, ...), only for
                reducers with ``accepts_cond``.
            layout: ``"tokens"``, ``"nchw"`` or ``"nhwc"``; by default 3-D input is tokens and 4-D is ``"nchw"``.
        """
        return self._forward(x, grid_size, cond, layout)

    def _forward(self, x: Tensor, grid_size: tuple[int, int] | None, cond: Tensor | None, layout: Layout | None,
                 **extra: Any) -> ReducerOutput:
        """The body of :meth:`forward`; a reducer whose ``forward`` takes more inputs hands them to its
        :meth:`reduce` as ``extra``."""
        prefix, spatial, hw = self.parse_input(x, grid_size, layout)
        if cond is not None:
            if not self.accepts_cond:
                raise ValueError(f"{type(self).__name__} takes no cond; got a tensor of shape {tuple(cond.shape)}")
            cond = self._check_cond(cond, spatial.shape[0])
        tokens, coords, aux = self.reduce(spatial, hw, cond, **extra)
        if prefix is not None and self.prefix == "keep":
            tokens = torch.cat([prefix, tokens], dim=1)
        return ReducerOutput(tokens, coords, aux)

    def reduce(
        self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None
    ) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
        """Reduce validated ``(B, H*W, C)`` tokens; implemented by each peer."""
        raise NotImplementedError

    # -- validation -------------------------------------------------------------------------------

    def parse_input(
        self, x: Tensor, grid_size: tuple[int, int] | None, layout: Layout | None
    ) -> tuple[Tensor | None, Tensor, tuple[int, int]]:
        """Return ``(prefix or None, spatial (B, H*W, C), (H, W))`` or raise a clear error."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor (float32, bfloat16, float16, ...), got {x.dtype}")
        layout, hw = resolve_layout(
            tuple(x.shape),
            dim=self.dim,
            k=self.k,
            layout=layout,
            grid_size=grid_size,
            default_grid=self.grid_size,
            num_prefix_tokens=self.num_prefix_tokens,
            allow_oversample=self.allow_oversample,
        )
        prefix = x[:, : self.num_prefix_tokens] if self.num_prefix_tokens else None
        if layout == "tokens":
            spatial = x[:, self.num_prefix_tokens :]
        elif layout == "nchw":
            spatial = x.flatten(2).transpose(1, 2)
        else:
            spatial = x.flatten(1, 2)
        if self.check_finite and not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or inf values")
        return prefix, spatial, hw

    def _check_cond(self, cond: Tensor, batch: int) -> Tensor:
        if not isinstance(cond, Tensor) or not cond.is_floating_point():
            raise TypeError(f"cond must be a floating-point tensor, got {getattr(cond, 'dtype', type(cond))}")
        cond_dim = getattr(self, "cond_dim", None)
        if cond.dim() != 2 or cond.shape[0] != batch or cond.shape[1] != cond_dim:
            raise ValueError(f"cond must have shape (B, cond_dim)=({batch}, {cond_dim}), got {tuple(cond.shape)}")
        return cond

    def extra_repr(self) -> str:
        return f"dim={self.dim}, k={self.k}, prefix={self.prefix!r}, num_prefix_tokens={self.num_prefix_tokens}"

