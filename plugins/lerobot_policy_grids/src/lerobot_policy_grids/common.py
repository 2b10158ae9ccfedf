"""What every ``*_grids`` policy shares: the GridS config fields, sampler construction and strict checkpoint loading.

The config fields live in :class:`GridSConfigFields`, a dataclass mixed into each upstream config subclass so
LeRobot's CLI (draccus) exposes them as ``--policy.grids_k=16`` and so on. :class:`GridSPolicyMixin` goes in front
of the upstream policy class in the MRO: it owns the sampler (``self.grids``, a
:class:`grids_vla.MultiCameraGridS`, state-dict prefix ``grids.``) and overrides ``load_state_dict`` so that

* a GridS checkpoint loads exactly (a partial or mismatched sampler is an error);
* an upstream (non-GridS) checkpoint loads with the sampler freshly initialised and a warning that names the keys;
* any other missing or unexpected key is an error, whatever ``strict`` says (LeRobot loads non-strictly by
  default, which would otherwise hide a wrong checkpoint).

SmolVLA's two in-encoder designs (``grids_connector``) have samplers of the same shape, so a ``"point"`` policy
carries a marker buffer (:data:`POINT_CONNECTOR_KEY`, a single 1 in the sampler's state dict): a checkpoint of one
design loading into the other is a one-line error naming ``grids_connector``, not a silent change of design.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from grids_vla import MultiCameraGridS
from grids_vla.grids import POINT_FEATURES
from grids_vla.reducers.base import ReducerOutput
from torch import Tensor, nn
from torch.nn.modules.module import _IncompatibleKeys

logger = logging.getLogger("lerobot_policy_grids")

GRIDS_PREFIX = "grids."
GRIDS_MODES = ("predicted", "random", "fixed-grid")
GRIDS_GEOMETRIES = ("mlp", "fourier", "none")
GRIDS_PREDICTORS = ("pooled", "attention")
GRIDS_CONDITIONINGS = ("none", "language")
GRIDS_CONNECTORS = ("neighbourhood", "point")  # the first is the default
#: state-dict key of the marker that a ``grids_connector="point"`` policy's sampler carries
POINT_CONNECTOR_KEY = GRIDS_PREFIX + "point_connector"


@dataclass
class GridSConfigFields:
    """GridS options added to an upstream LeRobot policy config.

    Attributes:
        grids_k: visual tokens per camera handed to the transformer.
        grids_mode: ``predicted`` (GridS), ``random`` (uniform points; ablation) or ``fixed-grid`` (spread anchors).
        grids_geometry: geometry injection ``mlp`` (paper), ``fourier`` or ``none`` (ablation).
        grids_predictor: ``pooled`` (paper: pooled feature -> MLP) or ``attention`` (per-point soft-argmax).
        grids_conditioning: ``none`` (paper) or ``language`` (the pooled instruction embedding conditions the points;
            VLA policies only).
        grids_per_camera: one sampler per camera (``True``) or one shared sampler with a learned camera embedding.
        grids_hidden: width of the coordinate predictor (paper: 512).
        grids_camera_dim: size of the camera embedding of the shared sampler.
        grids_allow_oversample: allow ``grids_k`` above the number of dense tokens (sub-patch resampling).
        grids_after_layer: ``None`` (default): GridS resamples the vision tower's output (after SmolVLA's
            connector / PaliGemma's projector). ``L``: the token map entering vision layer ``L`` is resampled
            (``L`` = the tower's depth: its last layer's output, before the final norm), so the remaining vision
            layers run on the resampled tokens (:mod:`lerobot_policy_grids.encoder`). VLA types only.
        grids_point_features: what the point predictor reads (``grids_vla.grids.POINT_FEATURES``): ``map`` (paper)
            the tokens it resamples; ``stem`` the vision tower's patch embedding of the same image, before position
            embeddings (points placed by what each patch shows). ``stem`` needs ``grids_after_layer`` set, where the
            resampled map is on the patch grid.
        grids_points_lr_scale: the coordinate heads learn at ``optimizer_lr * grids_points_lr_scale`` (a param group
            of their own in ``get_optim_params``; 1: like the rest).
        grids_connector: how SmolVLA's pixel-shuffle connector is fed with ``grids_after_layer`` set:
            ``neighbourhood`` (default; each point samples an ``s x s`` neighbourhood, ``s * s * grids_k`` tokens in
            the later vision layers) or ``point`` (one token per point in the later vision layers, put through the
            connector as a uniform ``s x s`` block). Anything but the default is only for ``smolvla_grids`` with
            ``grids_after_layer`` set.
    """

    grids_k: int = 16
    grids_mode: str = "predicted"
    grids_geometry: str = "mlp"
    grids_predictor: str = "pooled"
    grids_conditioning: str = "none"
    grids_per_camera: bool = False
    grids_hidden: int = 512
    grids_camera_dim: int = 16
    grids_allow_oversample: bool = False
    grids_after_layer: int | None = None
    grids_connector: str = GRIDS_CONNECTORS[0]
    grids_point_features: str = POINT_FEATURES[0]
    grids_points_lr_scale: float = 1.0

    def validate_grids(
        self, supports_language: bool = True, after_layer_note: str | None = None, pixel_shuffle: bool = False
    ) -> None:
        """Raise ``ValueError`` for an invalid GridS option.

        ``after_layer_note``: why this policy type has no ``grids_after_layer`` (``None``: it has one).
        ``pixel_shuffle``: the policy's vision tower ends in a pixel-shuffle connector (SmolVLA), the only case
        where ``grids_connector`` may differ from its default.
        """
        if not isinstance(self.grids_k, int) or isinstance(self.grids_k, bool) or self.grids_k < 1:
            raise ValueError(f"grids_k must be a positive int, got {self.grids_k!r}")
        for name, value, allowed in (
            ("grids_mode", self.grids_mode, GRIDS_MODES),
            ("grids_geometry", self.grids_geometry, GRIDS_GEOMETRIES),
            ("grids_predictor", self.grids_predictor, GRIDS_PREDICTORS),
            ("grids_conditioning", self.grids_conditioning, GRIDS_CONDITIONINGS),
            ("grids_connector", self.grids_connector, GRIDS_CONNECTORS),
            ("grids_point_features", self.grids_point_features, POINT_FEATURES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.grids_conditioning == "language" and not supports_language:
            raise ValueError(f"grids_conditioning='language' needs a language-conditioned policy; {type(self).__name__}"
                             " has no instruction input")
        if self.grids_conditioning == "language" and self.grids_mode != "predicted":
            raise ValueError("grids_conditioning='language' only applies to grids_mode='predicted'")
        if self.grids_hidden < 1 or self.grids_camera_dim < 1:
            raise ValueError("grids_hidden and grids_camera_dim must be positive")
        scale = self.grids_points_lr_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
            raise ValueError(f"grids_points_lr_scale must be a number > 0, got {scale!r}")
        if scale != 1 and self.grids_mode != "predicted":
            raise ValueError(f"grids_points_lr_scale={scale} needs grids_mode='predicted': grids_mode="
                             f"{self.grids_mode!r} has no coordinate head")
        layer = self.grids_after_layer
        if self.grids_point_features == "stem" and after_layer_note is not None:
            raise ValueError(f"grids_point_features='stem' is not available for {type(self).__name__}: it needs "
                             f"grids_after_layer, and {after_layer_note}")
        if self.grids_point_features == "stem" and (layer is None or self.grids_mode != "predicted"):
            raise ValueError("grids_point_features='stem' needs grids_mode='predicted' and grids_after_layer set (the "
                             "patch embedding is on the grid GridS resamples only inside the vision tower), got "
                             f"grids_mode={self.grids_mode!r}, grids_after_layer={layer!r}")
        if layer is not None and after_layer_note is not None:
            raise ValueError(f"grids_after_layer must be None for {type(self).__name__}: {after_layer_note}; "
                             f"got {layer!r}")
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
            raise ValueError(f"grids_after_layer must be None or an int in [0, depth of the vision tower], "
                             f"got {layer!r}")
        design = self.grids_connector
        if design != GRIDS_CONNECTORS[0] and not pixel_shuffle:
            raise ValueError(f"grids_connector must be {GRIDS_CONNECTORS[0]!r} for {type(self).__name__}: it has no "
                             f"pixel-shuffle connector ({design!r} is only for smolvla_grids with grids_after_layer "
                             f"set), got {design!r}")
        if design != GRIDS_CONNECTORS[0] and layer is None:
            raise ValueError(f"grids_connector={design!r} needs grids_after_layer set (GridS inside the vision tower); "
                             f"after the connector every point is one token already, got grids_after_layer=None")


def as_grids_config(config: Any, grids_cls: type) -> Any:
    """Return ``config`` as an instance of ``grids_cls``: upstream configs are converted with GridS defaults.

    This is what makes ``SmolVLAGridsPolicy.from_pretrained(upstream_checkpoint)`` work: the checkpoint's config
    says ``type: smolvla``, and the policy needs the GridS fields.
    """
    if config is None:
        return grids_cls()
    if isinstance(config, grids_cls):
        return config
    base = grids_cls.__mro__[1]
    if not isinstance(config, base):
        raise TypeError(f"{grids_cls.__name__} needs a {base.__name__} or {grids_cls.__name__}, got {type(config)}")
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    logger.warning(
        "Converting upstream %s to %s with default GridS options (grids_k=%d): the visual tokens will be resampled",
        type(config).__name__,
        grids_cls.__name__,
        GridSConfigFields.grids_k,
    )
    return grids_cls(**values)


def mark_point_connector(grids: MultiCameraGridS) -> None:
    """Give a ``grids_connector="point"`` sampler its checkpoint marker (:data:`POINT_CONNECTOR_KEY`)."""
    ref = next(grids.parameters(), None)
    device = None if ref is None else ref.device
    grids.register_buffer(POINT_CONNECTOR_KEY.removeprefix(GRIDS_PREFIX), torch.ones(1, device=device))


def sampler_name(camera: str) -> str:
    """Camera feature key -> the sampler's camera name (``observation.images.top`` -> ``top``; no dots allowed)."""
    return camera.removeprefix("observation.images.").replace(".", "_")


def build_grids(
    config: GridSConfigFields,
    dim: int,
    cameras: Sequence[str],
    grid_size: tuple[int, int] | None,
    cond_dim: int | None = None,
) -> MultiCameraGridS:
    """The sampler of a policy: one per camera or shared, with the config's options."""
    names = [sampler_name(c) for c in cameras]
    if len(set(names)) != len(names):
        raise ValueError(f"camera keys {list(cameras)} collide once shortened to sampler names {names}")
    return MultiCameraGridS(
        names,
        dim,
        config.grids_k,
        shared=not config.grids_per_camera,
        camera_dim=config.grids_camera_dim,
        cond_dim=cond_dim if config.grids_conditioning == "language" else None,
        look_dim=dim if config.grids_point_features == "stem" else None,
        hidden=config.grids_hidden,
        predictor=config.grids_predictor,
        coords=config.grids_mode,
        geometry=config.grids_geometry,
        grid_size=grid_size,
        allow_oversample=config.grids_allow_oversample,
    )


def square_grid(num_tokens: int, what: str) -> tuple[int, int]:
    """``(s, s)`` for ``s * s == num_tokens``; a clear error otherwise."""
    side = round(num_tokens**0.5)
    if side * side != num_tokens:
        raise ValueError(f"{what}: {num_tokens} visual tokens do not form a square grid; GridS needs the grid shape")
    return side, side


def _tied_keys(module: nn.Module, keys: set[str], provided: set[str]) -> set[str]:
    """Keys in ``keys`` whose tensor shares storage with a provided key (tied weights saved once)."""
    own = module.state_dict(keep_vars=True)
    by_ptr: dict[int, list[str]] = {}
    for k, v in own.items():
        if isinstance(v, Tensor) and v.numel():
            by_ptr.setdefault(v.data_ptr(), []).append(k)
    tied = set()
    for k in keys:
        v = own.get(k)
        if isinstance(v, Tensor) and v.numel() and any(o in provided for o in by_ptr[v.data_ptr()] if o != k):
            tied.add(k)
    return tied


class GridSPolicyMixin:
    """Put in front of an upstream LeRobot policy class; see the module docstring."""

    grids: MultiCameraGridS

    def grids_last_output(self) -> dict[str, ReducerOutput]:
        """The GridS output (tokens, coords, aux) of every camera in the last forward pass, detached.

        With ``grids_after_layer`` the tokens are the vision-width samples handed to the remaining vision layers
        (SmolVLA: ``K * s * s`` of them, each point's neighbourhood, or ``K`` with ``grids_connector="point"``);
        ``coords`` are the ``K`` points either way.
        """
        return dict(getattr(self, "_grids_last", {}))

    def _grids_record(self, camera: str, out: ReducerOutput) -> None:
        last = self.__dict__.setdefault("_grids_last", {})
        last[camera] = ReducerOutput(
            out.tokens.detach(), None if out.coords is None else out.coords.detach(), {}
        )

    def get_optim_params(self) -> Any:
        """The upstream parameter groups, with ``grids_points_lr_scale != 1`` the coordinate heads taken out into a
        group of their own at ``optimizer_lr * grids_points_lr_scale``."""
        params = super().get_optim_params()  # type: ignore[misc]
        scale = self.config.grids_points_lr_scale  # type: ignore[attr-defined]
        if scale == 1:
            return params
        head = [p for p in self.grids.coordinate_head_parameters() if p.requires_grad]
        ids = {id(p) for p in head}
        groups = [dict(g) for g in params] if isinstance(params, list | tuple) and params and isinstance(
            params[0], dict) else [{"params": list(params)}]
        for g in groups:
            g["params"] = [p for p in g["params"] if id(p) not in ids]
        lr = self.config.optimizer_lr * scale  # type: ignore[attr-defined]
        return [g for g in groups if g["params"]] + [{"params": head, "lr": lr}]

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load exactly, or an upstream checkpoint with a freshly initialised (and announced) GridS sampler."""
        own_grids = {k for k in self.state_dict() if k.startswith(GRIDS_PREFIX)}  # type: ignore[attr-defined]
        given_grids = {k for k in state_dict if k.startswith(GRIDS_PREFIX)}
        if given_grids and (POINT_CONNECTOR_KEY in own_grids) != (POINT_CONNECTOR_KEY in given_grids):
            saved, ours = GRIDS_CONNECTORS if POINT_CONNECTOR_KEY not in given_grids else GRIDS_CONNECTORS[::-1]
            raise RuntimeError(
                f"checkpoint does not fit {type(self).__name__}: it was saved with grids_connector={saved!r} "
                f"({'with' if saved == 'point' else 'without'} the {POINT_CONNECTOR_KEY} marker), this policy has "
                f"grids_connector={ours!r}; load it with its own config.json (grids_connector={saved!r})"
            )
        try:
            result = super().load_state_dict(state_dict, strict=False, assign=assign)  # type: ignore[misc]
        except RuntimeError as exc:
            raise RuntimeError(
                f"checkpoint does not fit {type(self).__name__} (different model size, grids_k, grids_per_camera, "
                f"grids_after_layer, cameras or GridS options than it was trained with?): {exc}"
            ) from exc
        missing = set(result.missing_keys)
        unexpected = list(result.unexpected_keys)
        fresh: list[str] = []
        if own_grids and not given_grids:
            fresh = sorted(missing & own_grids)
            logger.warning(
                "Loading a checkpoint without GridS weights into %s: the GridS sampler was freshly initialised "
                "(coordinate head at spread anchors, geometry embedding at zero); missing sampler keys: %s",
                type(self).__name__,
                fresh,
            )
            missing -= own_grids
        elif missing & own_grids:
            raise RuntimeError(
                f"checkpoint has a partial GridS sampler: missing {sorted(missing & own_grids)} "
                f"(was it saved with other GridS options, e.g. grids_per_camera, grids_predictor, grids_conditioning?)"
            )
        other_missing = missing - _tied_keys(self, missing, set(state_dict))  # type: ignore[arg-type]
        if other_missing or unexpected:
            raise RuntimeError(
                f"checkpoint does not match {type(self).__name__}: missing keys {sorted(other_missing)[:20]}, "
                f"unexpected keys {sorted(unexpected)[:20]}"
            )
        return _IncompatibleKeys(sorted(missing), unexpected)
