"""Flax (linen) GridS: the same module as :class:`grids_vla.GridSampler`, for JAX / openpi users.

Why linen and not nnx: linen keeps parameters in a plain nested dict (``{"params": {...}}``), which
makes the PyTorch conversion a key-renaming table with exact round trips, and ``apply`` is a pure
function that composes with ``jax.jit`` / ``jax.grad`` without splitting state. openpi's SigLIP and
Gemma are linen modules that its nnx ``Pi0`` wraps with ``flax.nnx.bridge.ToNNX``; a linen GridS plugs
in the same way (see ``docs/jax_openpi.md``).

Semantics (all mirrored from the PyTorch reference; the parity tests hold them to float32 round-off):

* Stage 1: mean-pool -> LayerNorm (eps 1e-5) -> optional FiLM (``z * (1 + scale) + shift``,
  zero-initialised) or concat conditioning -> Dense(hidden) -> ReLU -> Dense(2K) -> sigmoid.
  The last layer starts with zero kernel and the anchor logits as bias (:func:`spread_anchors`,
  clipped to ``[0.01, 0.99]``), computed for the constructor's ``grid_size`` (the image fractions
  themselves when unset, exactly as PyTorch does).
* ``predictor="attention"`` replaces the pooled MLP by :class:`AttentionPointHead` (per-point
  soft-argmax over the tokens with an anchor prior; beyond the paper), as in PyTorch.
* ``look_dim``: stage 1 (pooled or attention) reads ``look=`` ``(B, H*W, look_dim)``, a second feature map
  on the same grid, instead of the tokens it samples, and its first layers are sized for ``look_dim``;
  the output tokens are still ``x`` sampled at the points (beyond the paper). ``look`` is required
  exactly when ``look_dim`` is set, and ``look_dim`` needs ``coords="predicted"``, as in PyTorch.
* Stage 2: bilinear sampling (:func:`grids_vla.jax.sampling.bilinear_sample`), optional nearest
  snapping with a straight-through gradient, plus a geometry embedding (MLP / Fourier, zero last layer).
* ``attention_grad=True`` (attention predictor only) adds ``A @ x - stop_gradient(A @ x)`` to the sampled
  tokens, ``A`` the point head's attention maps: zero forward, and in the backward pass every token a point
  could move to reaches its map, as in PyTorch.
* ``context=True`` adds LayerNorm -> Dense(dim) of the frame's mean token (the sampled map ``x``, not
  ``look``; computed in ``param_dtype``, cast back to the tokens' dtype) to every sampled token; the Dense
  starts at zero, so a fresh module outputs what it would without it (beyond the paper).
* ``coords="random"`` draws uniform points from an explicit key (``rng=``) or the ``"grids"`` rng
  stream; ``"fixed-grid"`` uses the anchors of the grid actually passed in.
* Other Dense layers start like ``torch.nn.Linear`` (uniform in ``+-1/sqrt(fan_in)``), so a fresh JAX
  module is distributed like a fresh PyTorch one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import (
    check_attention_grad,
    check_choice,
    check_flag,
    check_grid_size,
    check_int,
    check_look_dim,
    check_look_given,
    check_look_shape,
    check_optional_dim,
    resolve_layout,
    spread_anchor_points,
)
from .sampling import bilinear_sample, coords_to_image_fraction, image_fraction_to_coords, snap_to_patch_centers

__all__ = [
    "AttentionPointHead",
    "GeometryEmbedding",
    "GridSampler",
    "MultiCameraGridS",
    "ReducerOutput",
    "anchor_coords",
    "spread_anchors",
]

SATURATION_LOGIT = 6.0
_ANCHOR_EPS = 0.01
RNG_STREAM = "grids"


class ReducerOutput(NamedTuple):
    """``tokens (B, [P +] K, C)``, ``coords (B, K, 2)`` in the sampler's convention, ``aux`` dict."""

    tokens: jax.Array
    coords: jax.Array
    aux: dict[str, Any]


def spread_anchors(k: int, grid_size: tuple[int, int] | None = None) -> np.ndarray:
    """K points spread evenly over the image as image fractions ``(K, 2)`` (float32), as in PyTorch."""
    return np.asarray(spread_anchor_points(k, grid_size), dtype=np.float32)


def anchor_coords(k: int, grid_size: tuple[int, int], align_corners: bool) -> np.ndarray:
    """The K spread anchors in the sampler's coordinate convention, ``(K, 2)`` float32 (host constant)."""
    frac = spread_anchors(k, grid_size)
    h, w = grid_size
    if not align_corners:
        return np.clip(frac, 0, 1)
    size = np.asarray([w, h], dtype=np.float32)
    denom = np.maximum(size - 1, 1)
    return np.clip((frac * size - np.float32(0.5)) / denom, 0, 1).astype(np.float32)


def anchor_logits(k: int, grid_size: tuple[int, int] | None, align_corners: bool) -> np.ndarray:
    """Bias of the last predictor layer at initialisation, ``(2K,)`` (PyTorch: ``reset_coordinate_head``)."""
    anchors = spread_anchors(k) if grid_size is None else anchor_coords(k, grid_size, align_corners)
    anchors = np.clip(anchors, _ANCHOR_EPS, 1 - _ANCHOR_EPS)
    anchors = anchors.astype(np.float32)
    return np.log(anchors / (np.float32(1) - anchors)).reshape(-1).astype(np.float32)


def torch_linear_init(fan_in: int):
    """``torch.nn.Linear``'s default init (weight and bias uniform in ``+-1/sqrt(fan_in)``) as a Flax init."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _constant_init(value: np.ndarray):
    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        del key
        return jnp.asarray(value, dtype=dtype).reshape(shape)

    return init


def _dense(features: int, fan_in: int, name: str, dtype: Any, zero: bool = False) -> nn.Dense:
    init = nn.initializers.zeros_init() if zero else torch_linear_init(fan_in)
    return nn.Dense(features, kernel_init=init, bias_init=init, name=name, dtype=dtype, param_dtype=dtype)


class GeometryEmbedding(nn.Module):
    """Embed image-fraction points ``(B, K, 2)`` into ``(B, K, dim)``; the last layer starts at zero."""

    dim: int
    hidden: int = 256
    mode: str = "mlp"
    fourier_bands: int = 8
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        if self.mode not in ("mlp", "fourier"):
            raise ValueError(f"geometry mode must be 'mlp' or 'fourier', got {self.mode!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, points: jax.Array) -> jax.Array:
        points = points.astype(self.param_dtype)
        if self.mode == "fourier":
            freqs = np.pi * 2.0 ** np.arange(self.fourier_bands, dtype=np.float32)
            angles = points[..., None] * jnp.asarray(freqs, dtype=points.dtype)  # (B, K, 2, bands)
            points = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
            points = points.reshape(*points.shape[:-2], -1)
        in_dim = points.shape[-1]
        y = nn.relu(_dense(self.hidden, in_dim, "mlp_0", self.param_dtype)(points))
        return _dense(self.dim, self.hidden, "mlp_2", self.param_dtype, zero=True)(y)


class AttentionPointHead(nn.Module):
    """Stage 1 without pooling (PyTorch ``AttentionPointHead``): each point is a soft-argmax over the tokens.

    Point ``k`` scores every LayerNorm-ed, projected token with a learned query (zero-initialised; plus a
    zero-initialised projection of ``cond``), adds a Gaussian log-prior around its anchor (width
    ``0.5 / sqrt(K)`` of the image) and returns the attention-weighted mean of the patch centres as an
    image fraction, with the attention maps ``(B, K, H*W)``.
    """

    dim: int
    k: int
    hidden: int
    cond_dim: int | None = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid_size: tuple[int, int], cond: jax.Array | None
    ) -> tuple[jax.Array, jax.Array]:
        dtype = self.param_dtype
        x = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=dtype, param_dtype=dtype, name="norm")(
            tokens.astype(dtype)
        )
        keys = _dense(self.hidden, self.dim, "key", dtype)(x)  # (B, N, hidden)
        queries = self.param("queries", nn.initializers.zeros_init(), (self.k, self.hidden), dtype)[None]
        if cond is not None:
            proj = _dense(self.k * self.hidden, self.cond_dim, "cond", dtype, zero=True)
            queries = queries + proj(cond.astype(keys.dtype)).reshape(-1, self.k, self.hidden)
        centres, log_prior = _attention_prior(self.k, grid_size)
        logits = queries @ keys.swapaxes(1, 2) * self.hidden**-0.5 + jnp.asarray(log_prior, keys.dtype)
        attn = jax.nn.softmax(logits, axis=-1)
        return attn @ jnp.asarray(centres, keys.dtype), attn


def _attention_prior(k: int, grid_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Patch centres as image fractions ``(N, 2)`` and the anchors' Gaussian log-prior ``(K, N)`` (host constants)."""
    h, w = grid_size
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    centres = np.stack([(xs.reshape(-1) + 0.5) / np.float32(w), (ys.reshape(-1) + 0.5) / np.float32(h)], -1)
    anchors = spread_anchors(k, grid_size)
    sq_dist = np.square(anchors[:, None] - centres[None]).sum(-1, dtype=np.float32)
    width = 0.5 / math.sqrt(k)
    log_prior = -sq_dist / np.float32(2 * width**2)
    return centres.astype(np.float32), log_prior.astype(np.float32)


class GridSampler(nn.Module):
    """Differentiable grid-sample pruning: ``(B, [P +] H*W, C)`` tokens -> ``(B, [P +] K, C)``.

    Attributes mirror :class:`grids_vla.GridSampler` (``dim``, ``k``, ``hidden``, ``predictor``, ``coords``,
    ``sampling``, ``geometry``, ``geometry_hidden``, ``fourier_bands``, ``cond_dim``, ``cond_mode``,
    ``look_dim``, ``attention_grad``, ``context``, ``grid_size``, ``num_prefix_tokens``, ``prefix``,
    ``allow_oversample``, ``check_finite``, ``align_corners``); ``param_dtype`` is the parameters' dtype (the
    predictor computes in it, like the PyTorch module computes in its weights' dtype).

    Call: ``module.apply({"params": p}, x, grid_size=None, cond=None, layout=None, rng=None, look=None)``
    with ``x`` a ``(B, N, C)`` token sequence (``layout="tokens"``) or a ``(B, C, H, W)`` / ``(B, H, W, C)``
    map (``"nchw"`` / ``"nhwc"``). ``coords="random"`` takes ``rng=key`` or ``rngs={"grids": key}``.
    ``look``: the ``(B, H*W, look_dim)`` features stage 1 reads, on the same grid as ``x`` (no prefix
    tokens), required exactly when the module was built with ``look_dim``.
    Returns :class:`ReducerOutput`. Shapes, ``grid_size`` and options are static under ``jax.jit``.
    """

    dim: int
    k: int = 16
    hidden: int = 512
    predictor: str = "pooled"
    coords: str = "predicted"
    sampling: str = "bilinear"
    geometry: str | bool = "mlp"
    geometry_hidden: int = 256
    fourier_bands: int = 8
    cond_dim: int | None = None
    cond_mode: str = "film"
    look_dim: int | None = None
    attention_grad: bool = False
    context: bool = False
    grid_size: tuple[int, int] | None = None
    num_prefix_tokens: int = 0
    prefix: str = "drop"
    allow_oversample: bool = False
    check_finite: bool = False
    align_corners: bool = True
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        check_int("dim", self.dim, minimum=1)
        check_int("k", self.k, minimum=1)
        check_int("num_prefix_tokens", self.num_prefix_tokens, minimum=0)
        if self.prefix not in ("drop", "keep"):
            raise ValueError(f"prefix must be 'drop' or 'keep', got {self.prefix!r}")
        if self.grid_size is not None:
            check_grid_size(self.grid_size)
        check_choice("coords", self.coords, ("predicted", "random", "fixed-grid"))
        check_choice("sampling", self.sampling, ("bilinear", "nearest"))
        check_choice("geometry", self.geometry_mode, ("mlp", "fourier", "none"))
        check_choice("cond_mode", self.cond_mode, ("film", "concat"))
        check_choice("predictor", self.predictor, ("pooled", "attention"))
        check_optional_dim("cond_dim", self.cond_dim)
        check_look_dim(self.look_dim, self.coords)
        check_attention_grad(self.attention_grad, self.predictor, self.coords)
        check_flag("context", self.context)
        super().__post_init__()

    @property
    def geometry_mode(self) -> str:
        """``geometry`` with ``True`` / ``False`` normalised to ``"mlp"`` / ``"none"``."""
        if self.geometry is True:
            return "mlp"
        if self.geometry is False:
            return "none"
        return self.geometry

    @property
    def accepts_cond(self) -> bool:
        """Whether ``cond`` is used (predicted coordinates with a ``cond_dim``); otherwise it is rejected."""
        return self.coords == "predicted" and self.cond_dim is not None

    def num_output_tokens(self, grid_size: tuple[int, int] | None = None) -> int:
        """Tokens per image handed downstream (K, plus the prefix when it is kept)."""
        return self.k + (self.num_prefix_tokens if self.prefix == "keep" else 0)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        grid_size: tuple[int, int] | None = None,
        *,
        cond: jax.Array | None = None,
        layout: str | None = None,
        rng: jax.Array | None = None,
        look: jax.Array | None = None,
    ) -> ReducerOutput:
        check_look_given(look is not None, self.look_dim)
        prefix, spatial, hw = self.parse_input(x, grid_size, layout)
        if cond is not None:
            if not self.accepts_cond:
                raise ValueError(f"GridSampler takes no cond; got a tensor of shape {tuple(jnp.shape(cond))}")
            cond = self._check_cond(cond, spatial.shape[0])
        if look is not None:
            look = self._check_look(look, spatial.shape[0], hw)
        coords, aux = self._predict_coords(spatial if look is None else look, hw, cond, rng)
        nearest = self.sampling == "nearest"
        out = bilinear_sample(spatial, hw, coords, self.align_corners, snap=nearest)
        if self.attention_grad:  # exactly zero forward; backward: d token / d attention = the features
            pooled = aux["attention"].astype(spatial.dtype) @ spatial
            out = out + (pooled - jax.lax.stop_gradient(pooled))
        if nearest:  # report (and embed) the patch centres actually read, straight-through gradient
            coords = snap_to_patch_centers(coords, hw, self.align_corners)
        if self.geometry_mode != "none":
            where = coords_to_image_fraction(coords, hw, self.align_corners)
            geo = GeometryEmbedding(
                self.dim,
                self.geometry_hidden,
                self.geometry_mode,
                self.fourier_bands,
                self.param_dtype,
                name="geometry",
            )
            out = out + geo(where).astype(out.dtype)
        if self.context:  # the frame's mean token (of x, not look), zero-initialised projection
            dtype = self.param_dtype
            summary = nn.LayerNorm(
                epsilon=1e-5, use_fast_variance=False, dtype=dtype, param_dtype=dtype, name="context_0"
            )(jnp.mean(spatial, axis=1).astype(dtype))
            summary = _dense(self.dim, self.dim, "context_1", dtype, zero=True)(summary)
            out = out + summary.astype(out.dtype)[:, None]
        if prefix is not None and self.prefix == "keep":
            out = jnp.concatenate([prefix, out], axis=1)
        return ReducerOutput(out, coords, aux)

    def _predict_coords(
        self, tokens: jax.Array, grid_size: tuple[int, int], cond: jax.Array | None, rng: jax.Array | None
    ) -> tuple[jax.Array, dict[str, Any]]:
        b = tokens.shape[0]
        if self.coords == "fixed-grid":
            dtype = jnp.promote_types(tokens.dtype, jnp.float32)
            anchors = jnp.asarray(anchor_coords(self.k, grid_size, self.align_corners), dtype=dtype)
            return jnp.broadcast_to(anchors[None], (b, self.k, 2)), {}
        if self.coords == "random":
            if rng is None:
                if self.has_rng(RNG_STREAM):
                    rng = self.make_rng(RNG_STREAM)
                elif self.is_initializing() and self.has_rng("params"):
                    rng = self.make_rng("params")
                else:
                    raise ValueError(
                        "coords='random' needs a PRNG key: pass rng=key or apply(..., rngs={'grids': key})"
                    )
            return jax.random.uniform(rng, (b, self.k, 2), jnp.float32), {}
        if cond is None and self.cond_dim is not None:
            dim = self.cond_dim
            raise ValueError(f"this GridSampler was built with cond_dim={dim}; pass cond=(B, {dim})")
        dtype = self.param_dtype
        head_dim = self.look_dim or self.dim  # what stage 1 reads
        if self.predictor == "attention":
            head = AttentionPointHead(head_dim, self.k, self.hidden, self.cond_dim, dtype, name="point_attn")
            frac, attn = head(tokens, grid_size, cond)
            return image_fraction_to_coords(frac, grid_size, self.align_corners), {"attention": attn}
        z = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=dtype, param_dtype=dtype, name="norm")(
            jnp.mean(tokens, axis=1).astype(dtype)
        )
        if cond is not None:
            cond = cond.astype(dtype)
            if self.cond_mode == "film":
                film = _dense(2 * head_dim, self.cond_dim, "film", dtype, zero=True)
                scale, shift = jnp.split(film(cond), 2, axis=-1)
                z = z * (1 + scale) + shift
            else:
                z = jnp.concatenate([z, cond], axis=-1)
        in_dim = head_dim + (self.cond_dim if self.cond_dim and self.cond_mode == "concat" else 0)
        h = nn.relu(_dense(self.hidden, in_dim, "mlp_0", dtype)(z))
        last = nn.Dense(
            2 * self.k,
            kernel_init=nn.initializers.zeros_init(),
            bias_init=_constant_init(anchor_logits(self.k, self.grid_size, self.align_corners)),
            name="mlp_2",
            dtype=dtype,
            param_dtype=dtype,
        )
        logits = last(h).reshape(b, self.k, 2)
        saturated = jnp.mean((jnp.abs(jax.lax.stop_gradient(logits)) > SATURATION_LOGIT).astype(jnp.float32))
        return jax.nn.sigmoid(logits), {"logits": logits, "saturated": saturated}

    # -- validation (messages match grids_vla.reducers.base) ------------------------------------

    def parse_input(
        self, x: Any, grid_size: tuple[int, int] | None, layout: str | None
    ) -> tuple[jax.Array | None, jax.Array, tuple[int, int]]:
        """Return ``(prefix or None, spatial (B, H*W, C), (H, W))`` or raise a clear error."""
        if not isinstance(x, jax.Array | np.ndarray):
            raise TypeError(f"x must be a jax.Array or numpy array, got {type(x).__name__}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"x must be a floating-point tensor (float32, bfloat16, float16, ...), got {x.dtype}")
        x = jnp.asarray(x)
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
        b = x.shape[0]
        if layout == "tokens":
            spatial = x[:, self.num_prefix_tokens :]
        elif layout == "nchw":
            spatial = x.reshape(b, self.dim, hw[0] * hw[1]).transpose(0, 2, 1)
        else:
            spatial = x.reshape(b, hw[0] * hw[1], self.dim)
        if self.check_finite:
            try:
                finite = bool(jnp.isfinite(x).all())
            except jax.errors.ConcretizationTypeError:
                raise ValueError(
                    "check_finite=True needs concrete input and cannot run inside jax.jit (GridS uses no host "
                    "callbacks); check the input before the jitted call or build the module with check_finite=False"
                ) from None
            if not finite:
                raise ValueError("x contains NaN or inf values")
        return prefix, spatial, hw

    def _check_cond(self, cond: Any, batch: int) -> jax.Array:
        if not isinstance(cond, jax.Array | np.ndarray) or not jnp.issubdtype(cond.dtype, jnp.floating):
            raise TypeError(f"cond must be a floating-point tensor, got {getattr(cond, 'dtype', type(cond))}")
        if cond.ndim != 2 or cond.shape[0] != batch or cond.shape[1] != self.cond_dim:
            raise ValueError(f"cond must have shape (B, cond_dim)=({batch}, {self.cond_dim}), got {tuple(cond.shape)}")
        return jnp.asarray(cond)

    def _check_look(self, look: Any, batch: int, grid_size: tuple[int, int]) -> jax.Array:
        want = (batch, grid_size[0] * grid_size[1], self.look_dim)
        is_array = isinstance(look, jax.Array | np.ndarray)
        check_look_shape(is_array and jnp.issubdtype(look.dtype, jnp.floating) and tuple(look.shape) == want, want,
                         tuple(look.shape) if is_array else type(look).__name__)
        return jnp.asarray(look)


class MultiCameraGridS(nn.Module):
    """GridS over named cameras: one sampler per camera (``samplers_<camera>``) or one shared sampler
    (``sampler``) conditioned on a learned camera embedding (``camera_embed``), as in PyTorch.

    ``sampler_kwargs`` are forwarded to every :class:`GridSampler`. Call with ``{camera: tokens}`` (and, with
    ``look_dim`` in ``sampler_kwargs``, ``look={camera: features}``); returns ``{camera: ReducerOutput}`` in
    ``cameras`` order. A missing or unknown camera in either dict is an error.
    """

    cameras: Sequence[str]
    dim: int
    k: int = 16
    shared: bool = True
    camera_dim: int = 16
    cond_dim: int | None = None
    sampler_kwargs: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        cams = list(self.cameras)
        if not cams or len(set(cams)) != len(cams):
            raise ValueError(f"cameras must be a non-empty list of unique names, got {cams!r}")
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: Mapping[str, jax.Array],
        grid_size: tuple[int, int] | None = None,
        *,
        cond: jax.Array | None = None,
        layout: str | None = None,
        rng: jax.Array | None = None,
        look: Mapping[str, jax.Array] | None = None,
    ) -> dict[str, ReducerOutput]:
        cameras = list(self.cameras)
        for name, given in {"inputs": inputs, **({} if look is None else {"look": look})}.items():
            missing = [c for c in cameras if c not in given]
            unknown = [c for c in given if c not in cameras]
            if missing or unknown:
                raise KeyError(f"{name}: cameras expected {cameras}, missing {missing}, unknown {unknown}")
        kwargs = dict(self.sampler_kwargs or {})
        if self.shared:
            embed = nn.Embed(
                len(cameras), self.camera_dim, embedding_init=nn.initializers.normal(1.0), name="camera_embed"
            )
            cond_dim = self.camera_dim + (self.cond_dim or 0)
            sampler = GridSampler(self.dim, self.k, cond_dim=cond_dim, name="sampler", **kwargs)
        out = {}
        for i, cam in enumerate(cameras):
            x = inputs[cam]
            cam_rng = None if rng is None else jax.random.fold_in(rng, i)
            cam_look = None if look is None else look[cam]
            if self.shared:
                cam_cond = embed(jnp.full((x.shape[0],), i, dtype=jnp.int32))  # its table exists either way
                if sampler.coords != "predicted":  # random / fixed-grid points ignore the camera identity
                    out[cam] = sampler(x, grid_size, layout=layout, rng=cam_rng, look=cam_look)
                    continue
                full = cam_cond if cond is None else jnp.concatenate([cam_cond, cond.astype(cam_cond.dtype)], axis=-1)
                out[cam] = sampler(x, grid_size, cond=full, layout=layout, rng=cam_rng, look=cam_look)
            else:
                sampler_i = GridSampler(self.dim, self.k, cond_dim=self.cond_dim, name=f"samplers_{cam}", **kwargs)
                out[cam] = sampler_i(x, grid_size, cond=cond, layout=layout, rng=cam_rng, look=cam_look)
        return out

