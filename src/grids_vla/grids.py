"""GridS: predict K continuous coordinates per image and bilinearly resample the token grid there.

Stage 1 (where to look): global average pool -> LayerNorm -> [FiLM / concat conditioning] -> MLP
(hidden 512, ReLU) -> 2K logits -> sigmoid -> K points ``(x, y)`` in ``[0, 1]``.

Stage 2 (what is there): bilinear sampling of the ``H x W`` grid at the K points
(:func:`grids_vla.sampling.bilinear_sample`), plus a geometry embedding of the points
(``2 -> 256 -> C`` MLP, or Fourier features) added to the sampled features.

Initialisation (why it does not saturate): the last predictor layer starts with zero weights and a
bias equal to the logits of K *anchors* spread evenly over the image (:func:`spread_anchors`), so at
step 0 every image gets the same well-spread points, all sigmoid inputs lie in ``[-4.6, 4.6]``
(away from the flat tails), and the points then move with the data. The geometry MLP's last layer
also starts at zero, so a freshly inserted GridS hands the downstream model plain resampled
features. ``aux["saturated"]`` reports the fraction of logits beyond ``|6|`` (sigmoid slope < 0.25 %
of its peak) so collapse to a border is visible in training logs rather than silent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .reducers.base import PrefixMode, ReducerOutput, TokenReducer
from .reducers.registry import register_reducer
from .sampling import (
    bilinear_sample,
    coords_to_image_fraction,
    image_fraction_to_coords,
    snap_to_patch_centers,
)

__all__ = ["GridSampler", "MultiCameraGridS", "spread_anchors", "CoordMode", "SamplingMode", "GeometryMode"]

CoordMode = Literal["predicted", "random", "fixed-grid"]
SamplingMode = Literal["bilinear", "nearest"]
GeometryMode = Literal["mlp", "fourier", "none"]

SATURATION_LOGIT = 6.0
_ANCHOR_EPS = 0.01


def spread_anchors(k: int, grid_size: tuple[int, int] | None = None) -> Tensor:
    """K points spread evenly over the image, as image fractions ``(K, 2)`` in ``(0, 1)``.

    Rows x columns follow the grid's aspect ratio (``r = round(sqrt(K * H / W))``, ``c = ceil(K / r)``);
    points sit at cell centres, row by row, with a short last row centred. ``K = H * W`` gives exactly
    the patch centres; ``K = 1`` gives the image centre.
    """
    h, w = grid_size if grid_size is not None else (1, 1)
    rows = min(k, max(1, round(math.sqrt(k * h / w))))
    cols = math.ceil(k / rows)
    rows = math.ceil(k / cols)
    points = []
    for i in range(rows):
        n = min(cols, k - i * cols)
        shift = (cols - n) / 2
        points += [((j + 0.5 + shift) / cols, (i + 0.5) / rows) for j in range(n)]
    return torch.tensor(points, dtype=torch.float32)


class GeometryEmbedding(nn.Module):
    """Embed image-fraction points ``(B, K, 2)`` into ``(B, K, C)``; the last layer starts at zero."""

    def __init__(self, dim: int, hidden: int = 256, mode: GeometryMode = "mlp", fourier_bands: int = 8) -> None:
        super().__init__()
        if mode not in ("mlp", "fourier"):
            raise ValueError(f"geometry mode must be 'mlp' or 'fourier', got {mode!r}")
        self.mode = mode
        if mode == "fourier":
            self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(fourier_bands, dtype=torch.float32), False)
            in_dim = 4 * fourier_bands
        else:
            in_dim = 2
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, points: Tensor) -> Tensor:
        points = points.to(self.mlp[0].weight.dtype)
        if self.mode == "fourier":
            angles = points.unsqueeze(-1) * self.freqs.to(points.dtype)  # (B, K, 2, bands)
            points = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
        return self.mlp(points)


@register_reducer("grids")
class GridSampler(TokenReducer):
    """Differentiable grid-sample pruning: ``(B, H*W, C)`` visual tokens -> ``(B, K, C)``.

    Args:
        dim: channel size ``C``.
        k: number of output tokens ``K``.
        hidden: stage-1 MLP width (paper: 512).
        coords: ``"predicted"`` (GridS), ``"random"`` (uniform points each call; ablation) or
            ``"fixed-grid"`` (the spread anchors; no learning).
        sampling: ``"bilinear"`` (GridS) or ``"nearest"`` (discrete selection: points snapped to the
            nearest patch centre with a straight-through gradient; ablation).
        geometry: ``"mlp"`` (paper), ``"fourier"`` or ``"none"`` (ablation); ``True``/``False`` are
            accepted for ``"mlp"``/``"none"``.
        geometry_hidden: geometry MLP width (paper: 256).
        cond_dim: size of an optional conditioning vector (language embedding, camera id, ...);
            ``None`` for none (the paper's setting).
        cond_mode: ``"film"`` (scale and shift of the pooled feature; zero-initialised) or ``"concat"``.
        grid_size, num_prefix_tokens, prefix, allow_oversample, check_finite, align_corners: see
            :class:`~grids_vla.reducers.base.TokenReducer`. ``grid_size`` given here also makes the
            anchor initialisation exact for non-square grids.
    """

    accepts_cond = True
    supports_oversample = True

    def __init__(
        self,
        dim: int,
        k: int = 16,
        *,
        hidden: int = 512,
        coords: CoordMode = "predicted",
        sampling: SamplingMode = "bilinear",
        geometry: GeometryMode | bool = "mlp",
        geometry_hidden: int = 256,
        fourier_bands: int = 8,
        cond_dim: int | None = None,
        cond_mode: Literal["film", "concat"] = "film",
        grid_size: tuple[int, int] | None = None,
        num_prefix_tokens: int = 0,
        prefix: PrefixMode = "drop",
        allow_oversample: bool = False,
        check_finite: bool = False,
        align_corners: bool = True,
    ) -> None:
        super().__init__(
            dim,
            k,
            grid_size=grid_size,
            num_prefix_tokens=num_prefix_tokens,
            prefix=prefix,
            allow_oversample=allow_oversample,
            check_finite=check_finite,
            align_corners=align_corners,
        )
        if geometry is True:
            geometry = "mlp"
        elif geometry is False:
            geometry = "none"
        _check_choice("coords", coords, ("predicted", "random", "fixed-grid"))
        _check_choice("sampling", sampling, ("bilinear", "nearest"))
        _check_choice("geometry", geometry, ("mlp", "fourier", "none"))
        _check_choice("cond_mode", cond_mode, ("film", "concat"))
        if cond_dim is not None and (not isinstance(cond_dim, int) or cond_dim < 1):
            raise ValueError(f"cond_dim must be a positive int or None, got {cond_dim!r}")
        self.coord_mode = coords
        self.sampling = sampling
        self.geometry_mode = geometry
        self.cond_dim = cond_dim
        self.cond_mode = cond_mode
        self.accepts_cond = coords == "predicted" and cond_dim is not None

        if coords == "predicted":
            self.norm = nn.LayerNorm(dim)
            in_dim = dim + (cond_dim if cond_dim and cond_mode == "concat" else 0)
            if cond_dim and cond_mode == "film":
                self.film = nn.Linear(cond_dim, 2 * dim)
                nn.init.zeros_(self.film.weight)
                nn.init.zeros_(self.film.bias)
            self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * k))
            self.reset_coordinate_head()
        self.geometry = (
            GeometryEmbedding(dim, geometry_hidden, geometry, fourier_bands) if geometry != "none" else None
        )

    @torch.no_grad()
    def reset_coordinate_head(self) -> None:
        """Zero the last predictor layer and set its bias to the anchors' logits (see module docstring)."""
        anchors = self.anchor_coords(self.grid_size or (1, 1)).clamp(_ANCHOR_EPS, 1 - _ANCHOR_EPS)
        last = self.mlp[2]
        nn.init.zeros_(last.weight)
        last.bias.copy_(torch.logit(anchors).flatten().to(last.bias.dtype))

    def anchor_coords(self, grid_size: tuple[int, int], device=None) -> Tensor:
        """The K spread anchors in this sampler's coordinate convention, ``(K, 2)``."""
        frac = spread_anchors(self.k, grid_size).to(device)
        return image_fraction_to_coords(frac, grid_size, self.align_corners)

    def predict_coords(
        self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        """Stage 1: ``(B, K, 2)`` points in ``[0, 1]`` (before any snapping) and aux tensors."""
        b = tokens.shape[0]
        if self.coord_mode == "fixed-grid":
            anchors = self.anchor_coords(grid_size, tokens.device).to(torch.promote_types(tokens.dtype, torch.float32))
            return anchors.unsqueeze(0).expand(b, -1, -1), {}
        if self.coord_mode == "random":
            return torch.rand(b, self.k, 2, device=tokens.device), {}
        weight_dtype = self.mlp[0].weight.dtype
        z = self.norm(tokens.mean(dim=1).to(weight_dtype))
        if cond is not None:
            cond = cond.to(weight_dtype)
            if self.cond_mode == "film":
                scale, shift = self.film(cond).chunk(2, dim=-1)
                z = z * (1 + scale) + shift
            else:
                z = torch.cat([z, cond], dim=-1)
        elif self.cond_dim is not None:
            dim = self.cond_dim
            raise ValueError(f"this GridSampler was built with cond_dim={dim}; pass cond=(B, {dim})")
        logits = self.mlp(z).view(b, self.k, 2)
        saturated = (logits.detach().abs() > SATURATION_LOGIT).float().mean()
        return torch.sigmoid(logits), {"logits": logits, "saturated": saturated}

    def reduce(
        self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        coords, aux = self.predict_coords(tokens, grid_size, cond)
        nearest = self.sampling == "nearest"
        out = bilinear_sample(tokens, grid_size, coords, self.align_corners, snap=nearest)
        if nearest:  # report (and embed) the patch centres actually read, with a straight-through gradient
            coords = snap_to_patch_centers(coords, grid_size, self.align_corners)
        if self.geometry is not None:
            where = coords_to_image_fraction(coords, grid_size, self.align_corners)
            out = out + self.geometry(where).to(out.dtype)
        return out, coords, aux

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, coords={self.coord_mode!r}, sampling={self.sampling!r}, "
            f"geometry={self.geometry_mode!r}, cond_dim={self.cond_dim}, align_corners={self.align_corners}"
        )


class MultiCameraGridS(nn.Module):
    """GridS over several named cameras: one sampler per camera, or one shared with a camera embedding.

    ``forward`` takes ``{camera: tokens}`` and returns ``{camera: ReducerOutput}``; a missing or unknown
    camera is an error. In shared mode the camera identity enters the coordinate predictor as part of
    the conditioning vector, so each camera can look at different places with one set of weights.

    Args:
        cameras: camera names, in the order their tokens are concatenated downstream.
        dim, k: as for :class:`GridSampler`.
        shared: one sampler with a learned camera embedding (``True``) or one sampler per camera.
        camera_dim: size of the camera embedding in shared mode.
        cond_dim: size of an extra per-sample conditioning vector (e.g. language), or ``None``.
        **kwargs: forwarded to every :class:`GridSampler`.
    """

    def __init__(
        self,
        cameras: Sequence[str],
        dim: int,
        k: int = 16,
        *,
        shared: bool = True,
        camera_dim: int = 16,
        cond_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        cameras = list(cameras)
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be a non-empty list of unique names, got {cameras!r}")
        self.cameras = cameras
        self.shared = shared
        self.cond_dim = cond_dim
        if shared:
            self.camera_embed = nn.Embedding(len(cameras), camera_dim)
            self.sampler = GridSampler(dim, k, cond_dim=camera_dim + (cond_dim or 0), **kwargs)
        else:
            self.samplers = nn.ModuleDict({c: GridSampler(dim, k, cond_dim=cond_dim, **kwargs) for c in cameras})

    def forward(
        self,
        inputs: dict[str, Tensor],
        grid_size: tuple[int, int] | None = None,
        *,
        cond: Tensor | None = None,
        layout: str | None = None,
    ) -> dict[str, ReducerOutput]:
        missing = [c for c in self.cameras if c not in inputs]
        unknown = [c for c in inputs if c not in self.cameras]
        if missing or unknown:
            raise KeyError(f"cameras expected {self.cameras}, missing {missing}, unknown {unknown}")
        out = {}
        for i, cam in enumerate(self.cameras):
            x = inputs[cam]
            if self.shared:
                ids = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
                cam_cond = self.camera_embed(ids)
                full = cam_cond if cond is None else torch.cat([cam_cond, cond.to(cam_cond.dtype)], dim=-1)
                out[cam] = self.sampler(x, grid_size, cond=full, layout=layout)
            else:
                out[cam] = self.samplers[cam](x, grid_size, cond=cond, layout=layout)
        return out


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
