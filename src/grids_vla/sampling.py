"""Differentiable point sampling on a token grid, with one explicit coordinate convention.

Coordinates are ``(x, y)`` pairs in ``[0, 1]``; ``x`` runs along the width ``W`` and ``y`` along the
height ``H`` of a row-major token grid (token ``i * W + j`` sits at row ``i``, column ``j``).

``align_corners=True`` (the default)
    0 and 1 are the *centres* of the first and last patch: ``u = x * (W - 1)``. Every point in
    ``[0, 1]`` lies between real patch centres, so the gradient with respect to the coordinate is
    non-zero everywhere, and ``x = 1.0`` returns the last patch (the reference code's bug returned a
    zero token there).
``align_corners=False``
    0 and 1 are the image *borders*: ``u = x * W - 0.5``, clamped to ``[0, W - 1]`` (border padding,
    never zero padding). A point in the outer half-patch strip takes the border patch's feature and
    gets zero coordinate gradient along that axis, exactly like ``F.grid_sample(padding_mode="border")``.

In both conventions the four bilinear weights of a point sum to one, sampling at a patch centre
returns that patch's feature, and ``x = y = 1`` never produces a zero token.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "bilinear_sample",
    "coords_to_index_space",
    "image_fraction_to_coords",
    "coords_to_image_fraction",
    "patch_centers",
    "snap_to_patch_centers",
]


def coords_to_index_space(coords: Tensor, grid_size: tuple[int, int], align_corners: bool) -> Tensor:
    """Map ``(x, y)`` in ``[0, 1]`` to continuous patch indices ``(u, v)`` (``u`` in ``[0, W - 1]``)."""
    h, w = grid_size
    size = coords.new_tensor([w, h])
    if align_corners:
        uv = coords * (size - 1)
    else:
        uv = coords * size - 0.5
    # Selects, not min/max: at exactly 0 or W - 1 the gradient passes whole (torch.minimum would halve it).
    uv = torch.where(uv < 0, torch.zeros_like(uv), uv)
    return torch.where(uv > size - 1, (size - 1).expand_as(uv), uv)


def coords_to_image_fraction(coords: Tensor, grid_size: tuple[int, int], align_corners: bool) -> Tensor:
    """Where a coordinate falls on the image, as a fraction of its width and height (for drawing)."""
    if not align_corners:
        return coords
    h, w = grid_size
    size = coords.new_tensor([w, h])
    return (coords * (size - 1) + 0.5) / size


def image_fraction_to_coords(frac: Tensor, grid_size: tuple[int, int], align_corners: bool) -> Tensor:
    """Inverse of :func:`coords_to_image_fraction`, clipped to ``[0, 1]``."""
    if not align_corners:
        return frac.clamp(0, 1)
    h, w = grid_size
    size = frac.new_tensor([w, h])
    denom = (size - 1).clamp_min(1)
    return ((frac * size - 0.5) / denom).clamp(0, 1)


def patch_centers(grid_size: tuple[int, int], align_corners: bool, dtype=torch.float32, device=None) -> Tensor:
    """Coordinates ``(H * W, 2)`` of every patch centre, in raster order."""
    h, w = grid_size
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=dtype, device=device), torch.arange(w, dtype=dtype, device=device), indexing="ij"
    )
    frac = torch.stack([(xs.flatten() + 0.5) / w, (ys.flatten() + 0.5) / h], dim=-1)
    return image_fraction_to_coords(frac, grid_size, align_corners)


def snap_to_patch_centers(coords: Tensor, grid_size: tuple[int, int], align_corners: bool) -> Tensor:
    """Round coordinates to the nearest patch centre with a straight-through gradient.

    The forward value is an exact patch centre (so bilinear sampling there returns one patch: discrete
    selection); the backward pass treats the rounding as the identity.
    """
    h, w = grid_size
    size = coords.new_tensor([w, h])
    uv = coords_to_index_space(coords, grid_size, align_corners)
    centre = torch.round(uv)
    if align_corners:
        snapped = centre / (size - 1).clamp_min(1)
    else:
        snapped = (centre + 0.5) / size
    return coords + (snapped - coords).detach()


def bilinear_sample(
    tokens: Tensor, grid_size: tuple[int, int], coords: Tensor, align_corners: bool = True, snap: bool = False
) -> Tensor:
    """Bilinearly sample a row-major token grid at continuous points.

    Args:
        tokens: ``(B, H * W, C)`` features in raster order.
        grid_size: ``(H, W)``.
        coords: ``(B, K, 2)`` points ``(x, y)`` in ``[0, 1]`` (values outside are clamped to the border).
        align_corners: the coordinate convention (see the module docstring).
        snap: discrete selection: take the nearest patch exactly (weights exactly 0 / 1) while the
            gradient with respect to ``coords`` is the bilinear one (straight-through).

    Returns:
        ``(B, K, C)`` sampled features, differentiable in ``tokens`` and ``coords``.
    """
    h, w = grid_size
    b, _, c = tokens.shape
    # Positions and weights in at least float32: a bf16 index has ~1/16 patch resolution at W = 16.
    pos_dtype = torch.promote_types(coords.dtype, torch.float32)
    uv = coords_to_index_space(coords.to(pos_dtype), grid_size, align_corners)
    # Lower neighbour clamped to W - 2 (not the upper one to W - 1): at u = W - 1 the weight moves
    # entirely onto the last patch instead of vanishing.
    hi = uv.new_tensor([max(w - 2, 0), max(h - 2, 0)])
    # Indices from a NaN-free copy (uv is otherwise in [0, W - 1]): a NaN would cast to INT64_MIN, an
    # out-of-range gather. The point's weights stay NaN, so its output is NaN on every grid and device.
    lo = torch.minimum(torch.floor(uv.detach().nan_to_num(0.0)), hi)
    if snap:  # exact 0 / 1 forward value; the added zero carries the bilinear gradient
        frac = (torch.round(uv) - lo).detach() + (uv - uv.detach())
    else:
        frac = uv - lo  # in [0, 1]; gradient 1 with respect to uv
    frac = frac.to(tokens.dtype)
    lo = lo.long()
    x0, y0 = lo[..., 0], lo[..., 1]
    x1, y1 = x0 + int(w > 1), y0 + int(h > 1)
    fx, fy = frac[..., 0:1], frac[..., 1:2]
    # Gather all four neighbours in one call: (B, 4K) indices.
    idx = torch.cat([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], dim=1)
    corners = torch.gather(tokens, 1, idx.unsqueeze(-1).expand(b, idx.shape[1], c))
    f00, f01, f10, f11 = corners.chunk(4, dim=1)
    # Product form: at a patch centre one weight is exactly 1 and the others exactly 0.
    gx, gy = 1 - fx, 1 - fy
    return f00 * (gx * gy) + f01 * (fx * gy) + f10 * (gx * fy) + f11 * (fx * fy)
