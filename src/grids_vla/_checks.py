"""Framework-free argument and shape checks shared by the PyTorch and JAX modules.

Only Python ints and tuples go in, so both implementations raise the same errors, word for word, from
one piece of code.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "check_choice", "check_int", "check_optional_dim", "check_look_dim", "check_look_given", "check_look_shape",
    "check_flag", "check_attention_grad",
    "check_grid_size", "resolve_layout", "spread_anchor_points",
]


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_optional_dim(name: str, value: Any) -> None:
    """A feature size that may be left out: a positive int or None (``cond_dim``, ``look_dim``)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def check_look_dim(look_dim: Any, coords: str) -> None:
    """``look_dim`` is a feature size, and only a predictor (``coords="predicted"``) can read it."""
    check_optional_dim("look_dim", look_dim)
    if look_dim is not None and coords != "predicted":
        raise ValueError(f"look_dim gives the point predictor its own features; coords={coords!r} predicts none")


def check_look_shape(ok: bool, want: tuple[int, int, int], found: Any) -> None:
    """``look`` is a floating-point ``(B, H*W, look_dim)`` array (``ok``); ``found`` is its shape or type name."""
    if not ok:
        raise ValueError(f"look must be a floating-point tensor of shape (B, H*W, look_dim)={want}, got {found}")


def check_look_given(given: bool, look_dim: int | None) -> None:
    """``look`` is passed exactly when the sampler was built with ``look_dim`` (PyTorch and Flax GridSampler)."""
    if not given and look_dim is not None:
        raise ValueError(f"this GridSampler was built with look_dim={look_dim}; pass look=(B, H*W, {look_dim}), "
                         f"the features its points are predicted from")
    if given and look_dim is None:
        raise ValueError("look was given, but this GridSampler was built without look_dim: its points are "
                         "predicted from the tokens it samples")


def check_flag(name: str, value: Any) -> None:
    """A switch is a real bool (``1`` or ``"yes"`` is refused, not read as true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def check_attention_grad(attention_grad: Any, predictor: Any, coords: str) -> None:
    """``attention_grad`` routes gradient through the attention point head's maps, so it needs that head."""
    check_flag("attention_grad", attention_grad)
    if attention_grad and (predictor != "attention" or coords != "predicted"):
        raise ValueError("attention_grad needs predictor='attention' and coords='predicted' (it routes gradient "
                         "through the attention maps)")


def check_grid_size(grid_size: Any) -> tuple[int, int]:
    try:
        h, w = grid_size
    except (TypeError, ValueError):
        raise ValueError(f"grid_size must be a pair (H, W), got {grid_size!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (h, w)):
        raise ValueError(f"grid_size must be two positive ints (H, W), got {grid_size!r}")
    return int(h), int(w)


def resolve_layout(
    shape: tuple[int, ...],
    *,
    dim: int,
    k: int,
    layout: str | None,
    grid_size: tuple[int, int] | None,
    default_grid: tuple[int, int] | None,
    num_prefix_tokens: int,
    allow_oversample: bool,
) -> tuple[str, tuple[int, int]]:
    """Check an input's shape against a reducer's settings; return ``(layout, (H, W))`` or raise."""
    ndim = len(shape)
    if layout is None:
        layout = "tokens" if ndim == 3 else "nchw"
    if layout not in ("tokens", "nchw", "nhwc"):
        raise ValueError(f"layout must be 'tokens', 'nchw' or 'nhwc', got {layout!r}")
    if layout == "tokens":
        if ndim != 3:
            raise ValueError(f"x with layout='tokens' must be (B, N, C), got shape {shape}")
        hw = grid_size if grid_size is not None else default_grid
        if hw is None:
            raise ValueError("grid_size=(H, W) is required for token-sequence input (constructor or call)")
        hw = check_grid_size(hw)
        expected = num_prefix_tokens + hw[0] * hw[1]
        if shape[1] != expected:
            raise ValueError(
                f"x has N={shape[1]} tokens but num_prefix_tokens + H*W = "
                f"{num_prefix_tokens} + {hw[0]}*{hw[1]} = {expected}"
            )
        c = shape[2]
    else:
        if ndim != 4:
            raise ValueError(f"x with layout={layout!r} must be 4-D, got shape {shape}")
        if num_prefix_tokens:
            raise ValueError("a feature map has no prefix tokens; pass a token sequence when num_prefix_tokens > 0")
        _, c, h, w = shape if layout == "nchw" else (shape[0], shape[3], shape[1], shape[2])
        hw = (h, w)
        if grid_size is not None and tuple(grid_size) != hw:
            raise ValueError(f"grid_size={tuple(grid_size)} disagrees with the feature map's (H, W)={hw}")
    if shape[0] < 1:
        raise ValueError("x has batch size 0")
    if c != dim:
        hint = " (is the layout right? pass layout='nhwc' for channels-last maps)" if ndim == 4 else ""
        raise ValueError(f"x has C={c} channels but the reducer was built with dim={dim}{hint}")
    n = hw[0] * hw[1]
    if k > n and not allow_oversample:
        raise ValueError(
            f"k={k} exceeds the H*W={n} tokens of a {hw[0]}x{hw[1]} grid (pass allow_oversample=True to permit it)"
        )
    return layout, hw


def spread_anchor_points(k: int, grid_size: tuple[int, int] | None = None) -> list[tuple[float, float]]:
    """K image-fraction points spread evenly over the image (see :func:`grids_vla.grids.spread_anchors`)."""
    h, w = grid_size if grid_size is not None else (1, 1)
    rows = min(k, max(1, round(math.sqrt(k * h / w))))
    cols = math.ceil(k / rows)
    rows = math.ceil(k / cols)
    points = []
    for i in range(rows):
        n = min(cols, k - i * cols)
        shift = (cols - n) / 2
        points += [((j + 0.5 + shift) / cols, (i + 0.5) / rows) for j in range(n)]
    return points
