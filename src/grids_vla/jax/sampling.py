"""JAX twin of :mod:`grids_vla.sampling`: the same coordinate convention, values and gradients.

Coordinates are ``(x, y)`` in ``[0, 1]`` on a row-major ``H x W`` token grid; ``align_corners=True``
puts 0 and 1 on the centres of the first and last patch, ``align_corners=False`` on the image borders
(with border clamping). See the PyTorch module's docstring for the full statement; every function here
mirrors its namesake there operation by operation, including where the gradient goes at the clamps
(at exactly ``0`` and ``W - 1`` the gradient passes whole),
so the parity tests can hold values *and* gradients to float32 round-off.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "bilinear_sample",
    "coords_to_index_space",
    "coords_to_image_fraction",
    "image_fraction_to_coords",
    "patch_centers",
    "snap_to_patch_centers",
]


def _size(grid_size: tuple[int, int], dtype) -> jax.Array:
    h, w = grid_size
    return jnp.asarray([w, h], dtype=dtype)


def _div(x: jax.Array, d: jax.Array | float) -> jax.Array:
    """``x / d`` correctly rounded, like PyTorch.

    XLA rewrites a division by a broadcast divisor into a multiplication by its reciprocal, which is
    off by one ulp in about a third of the cases; the Fourier geometry features (frequencies up to
    ``128 pi``) would amplify that ulp past the parity tolerance. Materialising the divisor at the full
    shape behind an optimisation barrier keeps a true division.
    """
    d = jnp.broadcast_to(jnp.asarray(d, dtype=x.dtype), x.shape)
    return x / jax.lax.optimization_barrier(d)


def coords_to_index_space(coords: jax.Array, grid_size: tuple[int, int], align_corners: bool) -> jax.Array:
    """Map ``(x, y)`` in ``[0, 1]`` to continuous patch indices ``(u, v)``, clamped to ``[0, W - 1]``."""
    size = _size(grid_size, coords.dtype)
    uv = coords * (size - 1) if align_corners else coords * size - 0.5
    # Clamps written as selects so the gradient passes whole at exactly 0 and W - 1, as in PyTorch.
    uv = jnp.where(uv < 0, jnp.zeros_like(uv), uv)
    return jnp.where(uv > size - 1, jnp.broadcast_to(size - 1, uv.shape), uv)


def coords_to_image_fraction(coords: jax.Array, grid_size: tuple[int, int], align_corners: bool) -> jax.Array:
    """Where a coordinate falls on the image, as a fraction of its width and height."""
    if not align_corners:
        return coords
    size = _size(grid_size, coords.dtype)
    return _div(coords * (size - 1) + 0.5, size)


def image_fraction_to_coords(frac: jax.Array, grid_size: tuple[int, int], align_corners: bool) -> jax.Array:
    """Inverse of :func:`coords_to_image_fraction`, clipped to ``[0, 1]``."""
    if not align_corners:
        return jnp.clip(frac, 0, 1)
    size = _size(grid_size, frac.dtype)
    denom = jnp.maximum(size - 1, 1)
    return jnp.clip(_div(frac * size - 0.5, denom), 0, 1)


def patch_centers(grid_size: tuple[int, int], align_corners: bool, dtype=jnp.float32) -> jax.Array:
    """Coordinates ``(H * W, 2)`` of every patch centre, in raster order."""
    h, w = grid_size
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=dtype), jnp.arange(w, dtype=dtype), indexing="ij")
    frac = jnp.stack([_div(xs.reshape(-1) + 0.5, w), _div(ys.reshape(-1) + 0.5, h)], axis=-1)
    return image_fraction_to_coords(frac, grid_size, align_corners)


def snap_to_patch_centers(coords: jax.Array, grid_size: tuple[int, int], align_corners: bool) -> jax.Array:
    """Round to the nearest patch centre (half to even, like ``torch.round``); straight-through gradient."""
    size = _size(grid_size, coords.dtype)
    centre = jnp.round(coords_to_index_space(coords, grid_size, align_corners))
    snapped = _div(centre, jnp.maximum(size - 1, 1)) if align_corners else _div(centre + 0.5, size)
    return coords + jax.lax.stop_gradient(snapped - coords)


def bilinear_sample(
    tokens: jax.Array,
    grid_size: tuple[int, int],
    coords: jax.Array,
    align_corners: bool = True,
    snap: bool = False,
) -> jax.Array:
    """Bilinearly sample ``(B, H * W, C)`` raster-order tokens at ``(B, K, 2)`` points -> ``(B, K, C)``.

    Differentiable in ``tokens`` and ``coords``; positions are computed in at least float32 and the
    weights in the tokens' dtype, as in the PyTorch version. ``snap=True`` reads the nearest patch
    exactly (weights 0 / 1) while the coordinate gradient stays the bilinear one (straight-through).
    Pure ``jnp`` (a batched gather), so it traces under ``jax.jit`` / ``jax.grad`` / ``jax.vmap``.
    """
    h, w = grid_size
    pos_dtype = jnp.promote_types(coords.dtype, jnp.float32)
    uv = coords_to_index_space(coords.astype(pos_dtype), grid_size, align_corners)
    # Lower neighbour clamped to W - 2 so that u = W - 1 puts all the weight on the last patch.
    hi = jnp.asarray(np.array([max(w - 2, 0), max(h - 2, 0)]), dtype=pos_dtype)
    # Indices from a NaN-free copy, as in PyTorch: always in range; a NaN point's output is NaN.
    lo = jnp.minimum(jnp.floor(jnp.nan_to_num(jax.lax.stop_gradient(uv), nan=0.0)), hi)
    if snap:  # exact 0 / 1 forward weights; the added zero carries the bilinear gradient
        frac = jax.lax.stop_gradient(jnp.round(uv) - lo) + (uv - jax.lax.stop_gradient(uv))
    else:
        frac = uv - lo
    frac = frac.astype(tokens.dtype)
    lo = lo.astype(jnp.int32)
    x0, y0 = lo[..., 0], lo[..., 1]
    x1, y1 = x0 + int(w > 1), y0 + int(h > 1)
    idx = jnp.concatenate([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], axis=1)  # (B, 4K)
    corners = jax.vmap(lambda t, i: t[i])(tokens, idx)  # (B, 4K, C)
    f00, f01, f10, f11 = jnp.split(corners, 4, axis=1)
    fx, fy = frac[..., 0:1], frac[..., 1:2]
    gx, gy = 1 - fx, 1 - fy
    return f00 * (gx * gy) + f01 * (fx * gy) + f10 * (gx * fy) + f11 * (fx * fy)
