"""GridS: predict K continuous coordinates per image and bilinearly resample the token grid there.

Stage 1 (where to look): global average pool -> LayerNorm -> [FiLM / concat conditioning] -> MLP
(hidden 512, ReLU) -> 2K logits -> sigmoid -> K points ``(x, y)`` in ``[0, 1]``.

With ``look_dim``, stage 1 reads a second feature map on the same grid (``forward(x, look=...)``) instead of the
tokens it samples (beyond the paper).

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
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ._checks import (
    check_attention_grad,
    check_choice,
    check_flag,
    check_look_dim,
    check_look_given,
    check_look_shape,
    check_optional_dim,
    spread_anchor_points,
)
from .reducers.base import PrefixMode, ReducerOutput, TokenReducer
from .reducers.registry import register_reducer
from .sampling import (
    bilinear_sample,
    coords_to_image_fraction,
    image_fraction_to_coords,
    patch_centers,
    snap_to_patch_centers,
)

__all__ = ["GridSampler", "MultiCameraGridS", "spread_anchors", "CoordMode", "SamplingMode", "GeometryMode",
           "POINT_FEATURES"]

CoordMode = Literal["predicted", "random", "fixed-grid"]
SamplingMode = Literal["bilinear", "nearest"]
GeometryMode = Literal["mlp", "fourier", "none"]

SATURATION_LOGIT = 6.0
#: What a host gives the point predictor as ``look`` (its option ``point_features``): ``"map"`` nothing, so the
#: predictor reads the token map it resamples (the paper); ``"stem"`` the patch embedding's tokens of the same image,
#: before position embeddings, so points are placed by what each patch shows rather than where it is.
POINT_FEATURES = ("map", "stem")
_ANCHOR_EPS = 0.01


def spread_anchors(k: int, grid_size: tuple[int, int] | None = None) -> Tensor:
    """K points spread evenly over the image, as image fractions ``(K, 2)`` in ``(0, 1)``.

    Rows x columns follow the grid's aspect ratio (``r = round(sqrt(K * H / W))``, ``c = ceil(K / r)``);
    points sit at cell centres, row by row, with a short last row centred. ``K = H * W`` gives exactly
    the patch centres; ``K = 1`` gives the image centre.
    """
    return torch.tensor(spread_anchor_points(k, grid_size), dtype=torch.float32)


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


class AttentionPointHead(nn.Module):
    """Stage 1 without pooling (beyond the paper): each point is the soft-argmax of its own content map.

    Point ``k`` scores every token with a learned query (plus a projection of ``cond``, if any) against a
    LayerNorm-ed key, adds a Gaussian log-prior around its anchor (width ``0.5 / sqrt(K)`` of the image),
    and takes the attention-weighted mean of the patch centres. Queries and the conditioning projection
    start at zero, so the points start at (about) the anchors. A soft-argmax stays inside the image by
    construction, so it cannot saturate, and its coordinate gradient reaches every token's score instead
    of only the four neighbours of the current point.
    """

    def __init__(self, dim: int, k: int, hidden: int, cond_dim: int | None) -> None:
        super().__init__()
        self.k = k
        self.norm = nn.LayerNorm(dim)
        self.key = nn.Linear(dim, hidden)
        self.queries = nn.Parameter(torch.zeros(k, hidden))
        if cond_dim:
            self.cond = nn.Linear(cond_dim, k * hidden)
            nn.init.zeros_(self.cond.weight)
            nn.init.zeros_(self.cond.bias)
        self.prior_width = 0.5 / math.sqrt(k)

    def forward(self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """Image-fraction points ``(B, K, 2)`` and the attention maps ``(B, K, H*W)``."""
        keys = self.key(self.norm(tokens.to(self.key.weight.dtype)))  # (B, N, hidden)
        queries = self.queries.unsqueeze(0)
        if cond is not None:
            queries = queries + self.cond(cond.to(keys.dtype)).view(-1, self.k, keys.shape[-1])
        centres = patch_centers(grid_size, align_corners=False, dtype=keys.dtype, device=keys.device)
        anchors = spread_anchors(self.k, grid_size).to(keys)
        sq_dist = (anchors.unsqueeze(1) - centres.unsqueeze(0)).square().sum(-1)  # (K, N); cdist lacks bf16
        log_prior = -sq_dist / (2 * self.prior_width**2)
        logits = queries @ keys.transpose(1, 2) * keys.shape[-1] ** -0.5 + log_prior
        attn = logits.softmax(dim=-1)
        return attn @ centres, attn


@register_reducer("grids")
class GridSampler(TokenReducer):
    """Differentiable grid-sample pruning: ``(B, H*W, C)`` visual tokens -> ``(B, K, C)``.

    Args:
        dim: channel size ``C``.
        k: number of output tokens ``K``.
        hidden: stage-1 MLP width (paper: 512).
        predictor: ``"pooled"`` (the paper: pooled feature -> MLP -> sigmoid) or ``"attention"``
            (:class:`AttentionPointHead`: per-point soft-argmax over the tokens; beyond the paper).
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
        look_dim: channel size of separate features stage 1 reads instead of the tokens it samples, passed to
            :meth:`forward` as ``look`` on the same grid (e.g. a ViT stem's tokens before position embeddings, so
            the points can only be placed by what the image shows; beyond the paper); ``None`` (the paper): stage 1
            reads the sampled tokens.
        attention_grad: with ``predictor="attention"``, also hand each point's attention map the gradient of its
            token as if the token were the attention-weighted mean of the features (straight-through: the forward
            value is the bilinear sample, unchanged to the bit). The bilinear gradient alone only sees the four
            patches around a point; this one reaches every token the point could move to.
        context: add a learned projection of the frame's mean token to every sampled token (zero-initialised, so
            training starts from the paper's GridS): a global summary that reaches the policy whatever the points
            do. The paper's pooled predictor has such a path of its own, through the coordinates it passes to the
            geometry embedding; a fixed grid has none, and an attention head spends its coordinates on looking.
            Beyond the paper.
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
        predictor: Literal["pooled", "attention"] = "pooled",
        coords: CoordMode = "predicted",
        sampling: SamplingMode = "bilinear",
        geometry: GeometryMode | bool = "mlp",
        geometry_hidden: int = 256,
        fourier_bands: int = 8,
        cond_dim: int | None = None,
        cond_mode: Literal["film", "concat"] = "film",
        look_dim: int | None = None,
        attention_grad: bool = False,
        context: bool = False,
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
        check_choice("coords", coords, ("predicted", "random", "fixed-grid"))
        check_choice("sampling", sampling, ("bilinear", "nearest"))
        check_choice("geometry", geometry, ("mlp", "fourier", "none"))
        check_choice("cond_mode", cond_mode, ("film", "concat"))
        check_choice("predictor", predictor, ("pooled", "attention"))
        check_optional_dim("cond_dim", cond_dim)
        check_look_dim(look_dim, coords)
        self.coord_mode = coords
        self.sampling = sampling
        self.geometry_mode = geometry
        self.cond_dim = cond_dim
        self.cond_mode = cond_mode
        self.predictor = predictor if coords == "predicted" else None
        check_attention_grad(attention_grad, predictor, coords)
        self.attention_grad = attention_grad
        self.accepts_cond = coords == "predicted" and cond_dim is not None
        self.look_dim = look_dim
        head_dim = look_dim or dim  # what stage 1 reads

        if self.predictor == "attention":
            self.point_attn = AttentionPointHead(head_dim, k, hidden, cond_dim)
        elif self.predictor == "pooled":
            self.norm = nn.LayerNorm(head_dim)
            in_dim = head_dim + (cond_dim if cond_dim and cond_mode == "concat" else 0)
            if cond_dim and cond_mode == "film":
                self.film = nn.Linear(cond_dim, 2 * head_dim)
                nn.init.zeros_(self.film.weight)
                nn.init.zeros_(self.film.bias)
            self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * k))
            self.reset_coordinate_head()
        self.geometry = (
            GeometryEmbedding(dim, geometry_hidden, geometry, fourier_bands) if geometry != "none" else None
        )
        check_flag("context", context)
        self.context = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim)) if context else None
        if self.context is not None:
            nn.init.zeros_(self.context[1].weight)
            nn.init.zeros_(self.context[1].bias)

    def coordinate_head_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters that only move the points (the predictor, its input norm and conditioning path), e.g. for
        a learning rate of their own; empty for random or fixed-grid points."""
        for name in ("norm", "film", "mlp", "point_attn"):
            module = getattr(self, name, None)
            if module is not None:
                yield from module.parameters()

    @torch.no_grad()
    def reset_coordinate_head(self) -> None:
        """Zero the last predictor layer and set its bias to the anchors' logits (see module docstring)."""
        # Without a known grid the image fractions themselves are the best guess (exact when align_corners=False).
        if self.grid_size is None:
            anchors = spread_anchors(self.k)
        else:
            anchors = self.anchor_coords(self.grid_size)
        anchors = anchors.clamp(_ANCHOR_EPS, 1 - _ANCHOR_EPS)
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
        if cond is None and self.cond_dim is not None:
            dim = self.cond_dim
            raise ValueError(f"this GridSampler was built with cond_dim={dim}; pass cond=(B, {dim})")
        if self.predictor == "attention":
            frac, attn = self.point_attn(tokens, grid_size, cond)
            return image_fraction_to_coords(frac, grid_size, self.align_corners), {"attention": attn}
        weight_dtype = self.mlp[0].weight.dtype
        z = self.norm(tokens.mean(dim=1).to(weight_dtype))
        if cond is not None:
            cond = cond.to(weight_dtype)
            if self.cond_mode == "film":
                scale, shift = self.film(cond).chunk(2, dim=-1)
                z = z * (1 + scale) + shift
            else:
                z = torch.cat([z, cond], dim=-1)
        logits = self.mlp(z).view(b, self.k, 2)
        saturated = (logits.detach().abs() > SATURATION_LOGIT).float().mean()
        return torch.sigmoid(logits), {"logits": logits, "saturated": saturated}

    def forward(
        self,
        x: Tensor,
        grid_size: tuple[int, int] | None = None,
        *,
        cond: Tensor | None = None,
        layout: str | None = None,
        look: Tensor | None = None,
    ) -> ReducerOutput:
        """:meth:`TokenReducer.forward`, plus ``look``: the ``(B, H*W, look_dim)`` features stage 1 reads, on the
        same grid as ``x``, required exactly when the sampler was built with ``look_dim``."""
        check_look_given(look is not None, self.look_dim)
        return self._forward(x, grid_size, cond, layout, look=look)

    def reduce(
        self, tokens: Tensor, grid_size: tuple[int, int], cond: Tensor | None, look: Tensor | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        if look is not None:
            want = (tokens.shape[0], grid_size[0] * grid_size[1], self.look_dim)
            is_tensor = isinstance(look, Tensor)
            check_look_shape(is_tensor and look.is_floating_point() and tuple(look.shape) == want, want,
                             tuple(look.shape) if is_tensor else type(look).__name__)
        coords, aux = self.predict_coords(tokens if look is None else look, grid_size, cond)
        nearest = self.sampling == "nearest"
        out = bilinear_sample(tokens, grid_size, coords, self.align_corners, snap=nearest)
        if self.attention_grad:  # exactly zero forward; backward: d token / d attention = the features
            pooled = aux["attention"].to(tokens.dtype) @ tokens
            out = out + (pooled - pooled.detach())
        if nearest:  # report (and embed) the patch centres actually read, with a straight-through gradient
            coords = snap_to_patch_centers(coords, grid_size, self.align_corners)
        if self.geometry is not None:
            where = coords_to_image_fraction(coords, grid_size, self.align_corners)
            out = out + self.geometry(where).to(out.dtype)
        if self.context is not None:
            out = out + self.context(tokens.mean(dim=1).to(self.context[1].weight.dtype)).to(out.dtype).unsqueeze(1)
        return out, coords, aux

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, coords={self.coord_mode!r}, predictor={self.predictor!r}, "
            f"sampling={self.sampling!r}, attention_grad={self.attention_grad}, "
            f"geometry={self.geometry_mode!r}, context={self.context is not None}, cond_dim={self.cond_dim}, "
            f"align_corners={self.align_corners}"
        )


class MultiCameraGridS(nn.Module):
    """GridS over several named cameras: one sampler per camera, or one shared with a camera embedding.

    ``forward`` takes ``{camera: tokens}`` and returns ``{camera: ReducerOutput}``; a missing or unknown
    camera is an error. ``forward_camera(camera, tokens)`` resamples one camera's tokens alone, for host
    code that embeds one camera at a time; ``forward`` calls it for every camera. In shared mode the camera
    identity enters the coordinate predictor as part of the conditioning vector, so each camera can look at
    different places with one set of weights.

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

    def coordinate_head_parameters(self) -> Iterator[nn.Parameter]:
        """Every sampler's :meth:`GridSampler.coordinate_head_parameters`, plus the camera embedding that conditions
        the shared one."""
        if self.shared:
            if self.sampler.accepts_cond:
                yield from self.camera_embed.parameters()
            yield from self.sampler.coordinate_head_parameters()
        else:
            for sampler in self.samplers.values():
                yield from sampler.coordinate_head_parameters()

    def forward(
        self,
        inputs: dict[str, Tensor],
        grid_size: tuple[int, int] | None = None,
        *,
        cond: Tensor | None = None,
        layout: str | None = None,
        look: dict[str, Tensor] | None = None,
    ) -> dict[str, ReducerOutput]:
        for name, given in {"inputs": inputs, **({} if look is None else {"look": look})}.items():
            missing = [c for c in self.cameras if c not in given]
            unknown = [c for c in given if c not in self.cameras]
            if missing or unknown:
                raise KeyError(f"{name}: cameras expected {self.cameras}, missing {missing}, unknown {unknown}")
        return {cam: self.forward_camera(cam, inputs[cam], grid_size, cond=cond, layout=layout,
                                         look=None if look is None else look[cam]) for cam in self.cameras}

    def forward_camera(
        self,
        camera: str,
        x: Tensor,
        grid_size: tuple[int, int] | None = None,
        *,
        cond: Tensor | None = None,
        layout: str | None = None,
        look: Tensor | None = None,
    ) -> ReducerOutput:
        """Resample one camera's tokens: what ``forward`` returns for ``camera``, computed without the others.

        Args:
            camera: one of ``cameras``.
            x, grid_size, layout, look: as for :meth:`GridSampler.forward` (``forward`` takes ``look`` per camera).
            cond: the extra ``(B, cond_dim)`` conditioning, if built with ``cond_dim``; in shared mode the
                camera embedding is put in front of it.
        """
        if camera not in self.cameras:
            raise KeyError(f"camera must be one of {self.cameras}, got {camera!r}")
        if not self.shared:
            return self.samplers[camera](x, grid_size, cond=cond, layout=layout, look=look)
        if not self.sampler.accepts_cond:  # random / fixed-grid points ignore the camera identity
            return self.sampler(x, grid_size, layout=layout, look=look)
        ids = torch.full((x.shape[0],), self.cameras.index(camera), dtype=torch.long, device=x.device)
        cam_cond = self.camera_embed(ids)
        full = cam_cond if cond is None else torch.cat([cam_cond, cond.to(cam_cond.dtype)], dim=-1)
        return self.sampler(x, grid_size, cond=full, layout=layout, look=look)
