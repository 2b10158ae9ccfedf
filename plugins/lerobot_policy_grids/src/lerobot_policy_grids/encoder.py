"""GridS inside the vision tower of SmolVLA, PI0 and PI0.5 (``grids_after_layer=L``).

By default (``grids_after_layer=None``) GridS resamples what ``embed_image`` returns, after the whole vision tower,
so SigLIP still runs on every patch. With ``grids_after_layer=L`` the token map entering vision layer ``L`` is
resampled instead (``L`` = the tower's depth: the last layer's output, before the final norm), and the remaining
layers, the final norm and the projection run on the resampled tokens. No encoder weight is added or changed:
only the policy's own sampler (``policy.grids``, state-dict prefix ``grids.``) is new, so an upstream checkpoint
still loads into every upstream parameter.

The mechanism is the core's hook adapter for Hugging Face towers (:class:`grids_vla.patch.hf_transformers.
TransformersGridS`, whose base :class:`~grids_vla.patch._common.HookAdapter` installs the pre-hook on layer ``L``
or the post-hook on the last layer, rewrites the layer's input and reads the patch grid off ``pixel_values``).
:class:`EncoderGridS` subclasses it for a policy: the sampler is the policy's :class:`grids_vla.MultiCameraGridS`,
driven per camera (and, with ``grids_conditioning="language"``, per instruction) by the ``embed_image`` wrapper
of :mod:`lerobot_policy_grids.vlm`; the adapter is kept outside the policy's module tree so no parameter is
registered twice.

**PI0 / PI0.5** (SigLIP, then a per-token linear projector): the ``K`` sampled tokens run through the remaining
SigLIP layers, ``post_layernorm`` and ``multi_modal_projector``; the prefix gets ``K`` tokens per camera.

**SmolVLA** (SigLIP, then a connector = pixel shuffle of every ``s x s`` patch block into one token, ``s`` =
``scale_factor``, then a linear ``s*s*C_vision -> C_text``): ``K`` isolated tokens cannot feed the connector as it
is, so ``grids_connector`` chooses between two designs. Both add no weight and keep the pretrained connector.

* ``"neighbourhood"`` (default): GridS predicts ``K`` points and samples, around each, the ``s x s`` neighbourhood
  at one-patch spacing (offsets ``i - (s - 1) / 2`` patches along each axis, row-major), bilinearly and with the
  geometry embedding of each sample's own position. The remaining layers run on ``K * s * s`` tokens (point-major
  order; attention has no positional term there, so the order is immaterial). Before the connector, the
  ``(B, K*s*s, C)`` map is viewed as ``B*K`` images of ``s x s`` tokens, which the unchanged connector shuffles into
  exactly one token each (its concatenation order is the one it was trained on); the result is viewed back as
  ``(B, K, C_text)``. A point at the centre of a dense ``s x s`` block reads that block's patches exactly, so
  ``grids_mode="fixed-grid"`` with ``K`` = all blocks reproduces dense SmolVLA's image embedding (tested).
* ``"point"``: one bilinear sample per point (geometry embedding at the point itself), so the remaining layers and
  ``post_layernorm`` run on ``K`` tokens, ``s * s`` times fewer. Before the connector each point's token ``x`` is
  treated as a uniform ``s x s`` block: the connector applied to ``x`` repeated ``s * s`` times, which is
  ``x @ W_sum^T (+ b)`` with ``W_sum`` the connector's linear weight summed over its ``s * s`` slots
  (:func:`uniform_block_projection`). That is what runs (the connector itself is handed an empty batch), so the
  projection costs ``C_vision x C_text`` per point instead of ``s*s*C_vision x C_text``; the equality with the
  unchanged connector on the repeated token is tested. The approximation: the pretrained connector never saw
  uniform blocks, while the neighbourhood design feeds it real ``s x s`` patch blocks at ``s * s`` times the tokens
  in layers ``L..``. ``grids_k`` may then go up to the whole patch grid.

With ``grids_point_features="stem"`` the adapter also hooks the tower's patch embedding (the core's
:func:`grids_vla.patch.hf_transformers.patch_embedding`) and hands its output, the patch tokens before position
embeddings, to the point predictor as ``look``; what is sampled is still the map entering layer ``L``.

SmolVLA's tower is called with a patch attention mask that hides nothing; it is dropped (after checking that it
hides nothing) since it has the dense token count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from grids_vla import MultiCameraGridS
from grids_vla.patch.hf_transformers import TransformersGridS, patch_embedding
from grids_vla.reducers.base import ReducerOutput
from grids_vla.sampling import bilinear_sample, coords_to_image_fraction, coords_to_index_space
from torch import Tensor, nn

from .common import GRIDS_CONNECTORS

__all__ = [
    "EncoderGridS",
    "install_encoder_grids",
    "neighbourhood_points",
    "check_encoder_options",
    "connector_projection",
    "uniform_block_projection",
]


def neighbourhood_points(coords: Tensor, grid_size: tuple[int, int], side: int, align_corners: bool) -> Tensor:
    """The ``side x side`` sample points around each point, one patch apart, clamped to the grid.

    Args:
        coords: ``(B, K, 2)`` points ``(x, y)`` in ``[0, 1]`` (the sampler's convention, ``align_corners``).
        grid_size: ``(H, W)`` of the token map.
        side: neighbourhood side ``s``.

    Returns:
        ``(B, K * s * s, 2)`` coordinates in the same convention, point-major, then row-major inside a point
        (row offset along ``y``, column offset along ``x``), as SmolVLA's pixel shuffle orders an ``s x s`` block.
    """
    h, w = grid_size
    uv = coords_to_index_space(coords, grid_size, align_corners)  # (B, K, 2), patch-index units
    steps = torch.arange(side, dtype=uv.dtype, device=uv.device) - (side - 1) / 2
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    offsets = torch.stack([dx.flatten(), dy.flatten()], dim=-1)  # (s*s, 2)
    size = uv.new_tensor([w, h])
    points = (uv.unsqueeze(2) + offsets).clamp(min=0)
    points = torch.minimum(points, size - 1).flatten(1, 2)  # (B, K*s*s, 2)
    if align_corners:
        return points / (size - 1).clamp_min(1)
    return (points + 0.5) / size


def check_encoder_options(
    policy_type: str,
    after_layer: int,
    depth: int,
    k: int,
    grid: tuple[int, int],
    side: int,
    allow_oversample: bool,
    design: str | None = None,
) -> None:
    """One-line errors for ``grids_after_layer`` outside ``[0, depth]`` and a ``grids_k`` the grid cannot hold.

    ``side``: the neighbourhood each point samples (1: one token per point); ``design``: SmolVLA's
    ``grids_connector`` value, named in the error (``None`` for towers without a pixel-shuffle connector).
    """
    if isinstance(after_layer, bool) or not isinstance(after_layer, int) or not 0 <= after_layer <= depth:
        raise ValueError(f"grids_after_layer must be None or an int in [0, {depth}] for {policy_type} (its vision "
                         f"tower has {depth} layers), got {after_layer!r}")
    capacity = (grid[0] * grid[1]) // (side * side)
    if k > capacity and not allow_oversample:
        what = f"{grid[0]}x{grid[1]} token map entering vision layer {after_layer}"
        if side > 1:
            what = f"{side}x{side} neighbourhoods of the {what} (one per point, for the connector's pixel shuffle)"
        elif design is not None:
            what = f"{what} (grids_connector={design!r}: one token per point)"
        raise ValueError(f"grids_k must be in [1, {capacity}] with grids_after_layer={after_layer} for {policy_type}: "
                         f"at most {capacity} points fit the {what}; got grids_k={k} (grids_allow_oversample=True "
                         "lifts the limit)")


def connector_projection(connector: nn.Module, vision_dim: int) -> nn.Linear:
    """The linear layer of SmolVLM's connector (pixel shuffle, then ``modality_projection.proj``), checked.

    Raises a one-line ``ValueError`` where the connector is not that shape, since ``grids_connector="point"`` folds
    exactly that linear layer.
    """
    scale = getattr(connector, "scale_factor", None)
    proj = getattr(getattr(connector, "modality_projection", None), "proj", None)
    area = scale * scale if isinstance(scale, int) and scale > 0 else None
    if area is None or not isinstance(proj, nn.Linear) or proj.in_features != area * vision_dim:
        found = f"{type(connector).__name__} with scale_factor={scale!r}, modality_projection.proj={proj!r}"
        raise ValueError(f"grids_connector='point' needs SmolVLM's connector (pixel shuffle by an int scale_factor s, "
                         f"then modality_projection.proj = one nn.Linear from s*s*{vision_dim} inputs); found {found}")
    return proj


def uniform_block_projection(connector: nn.Module, tokens: Tensor) -> Tensor:
    """SmolVLM's connector applied to every token as a uniform ``s x s`` block: ``(..., C)`` -> ``(..., D)``.

    The pixel shuffle concatenates a block's ``s * s`` tokens slot by slot (input feature ``slot * C + c`` of the
    linear layer), so for a block whose tokens all equal ``x`` the connector gives ``x @ W_sum^T + b``, ``W_sum``
    being the ``(D, s*s*C)`` weight summed over the ``s * s`` slots to ``(D, C)``. No new weight: a change of the
    connector's weight changes this too, and gradients reach it (and ``tokens``) as through the connector.
    """
    proj = connector_projection(connector, tokens.shape[-1])
    area = connector.scale_factor**2
    weight = proj.weight.reshape(proj.out_features, area, tokens.shape[-1]).sum(dim=1)
    return F.linear(tokens, weight, proj.bias)


class EncoderGridS(TransformersGridS):
    """The core's Hugging Face tower adapter, driven by a policy's multi-camera sampler (see the module docstring).

    ``armed(camera, cond)`` brackets one ``embed_image`` call; ``last_output`` then holds the sampler's output for it
    (tokens ``(B, K * n * n, C_vision)`` for ``n = neighbourhood``, coordinates ``(B, K, 2)`` of the points).

    Args:
        neighbourhood: side ``n`` of the block each point samples (SmolVLA's ``"neighbourhood"`` design: the
            connector's ``scale_factor``; 1 otherwise).
        connector: ``None`` (no pixel-shuffle connector: PI0 / PI0.5), or SmolVLA's ``grids_connector`` value,
            ``"neighbourhood"`` (the connector shuffles each point's ``n x n`` samples) or ``"point"`` (each point's
            token goes through the connector as a uniform block, :func:`uniform_block_projection`).
    """

    def __init__(
        self,
        grids: MultiCameraGridS,
        *,
        patch_size: tuple[int, int],
        after_layer: int,
        grid_size: tuple[int, int] | None,
        neighbourhood: int = 1,
        connector: str | None = None,
        allow_oversample: bool = False,
        point_features: str = "map",
    ) -> None:
        super().__init__(grids, patch_size=patch_size, num_prefix_tokens=0, prefix="drop", after_layer=after_layer,
                         grid_size=grid_size, point_features=point_features)
        if connector is not None and connector not in GRIDS_CONNECTORS:
            raise ValueError(f"grids_connector must be one of {GRIDS_CONNECTORS}, got {connector!r}")
        if connector == "point" and neighbourhood != 1:
            raise ValueError(f"grids_connector='point' samples one token per point, got neighbourhood={neighbourhood}")
        self.neighbourhood = int(neighbourhood)
        self.connector = connector
        self.allow_oversample = allow_oversample
        self._point_tokens: Tensor | None = None  # "point": the (B, K, C) tokens waiting for the folded connector
        self._camera: str | None = None
        self._cond: Tensor | None = None
        self._blocks: tuple[int, int] | None = None  # (B, K) of the map waiting for the connector

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_cond": None, "_camera": None, "_blocks": None, "_point_tokens": None}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, neighbourhood={self.neighbourhood}, connector={self.connector!r}"

    @contextlib.contextmanager
    def armed(self, camera: str, cond: Tensor | None) -> Iterator[None]:
        """Resample for ``camera`` (a sampler name) inside the ``with`` block."""
        self._camera, self._cond, self._blocks, self.last_output = camera, cond, None, None
        try:
            yield
        finally:
            self._camera, self._cond, self._blocks, self._point_tokens = None, None, None, None

    def _reduce(self, hidden: Tensor) -> Tensor:
        if self._camera is None:
            raise RuntimeError("GridS inside the vision tower ran outside embed_prefix's image embedding, so the "
                               "camera is unknown (grids_after_layer needs the policy's own embed_image path)")
        grid = self._grid_for(hidden.shape[1])
        n, side = grid[0] * grid[1], self.neighbourhood
        if hidden.shape[1] != n:
            raise ValueError(f"GridS inside the vision tower expected the {grid[0]}x{grid[1]} patch tokens, got "
                             f"{hidden.shape[1]} tokens")
        grids: MultiCameraGridS = self.sampler  # type: ignore[assignment]
        sampler = grids.sampler if grids.shared else grids.samplers[self._camera]
        if side > 1 and sampler.k * side * side > n and not self.allow_oversample:
            raise ValueError(f"grids_k must be in [1, {n // (side * side)}] for a {grid[0]}x{grid[1]} token map "
                             f"with {side}x{side} neighbourhoods, got grids_k={sampler.k} (grids_allow_oversample="
                             "True lifts the limit)")
        out = grids.forward_camera(self._camera, hidden, grid, cond=self._cond, layout="tokens", look=self.stem_look())
        if side > 1:
            points = neighbourhood_points(out.coords, grid, side, sampler.align_corners)
            tokens = bilinear_sample(hidden, grid, points.to(out.coords.dtype), sampler.align_corners)
            if sampler.geometry is not None:
                where = coords_to_image_fraction(points, grid, sampler.align_corners)
                tokens = tokens + sampler.geometry(where).to(tokens.dtype)
            out = ReducerOutput(tokens.to(hidden.dtype), out.coords, out.aux)
        if self.connector is not None:
            self._blocks = (hidden.shape[0], sampler.k)
        self.last_output = out
        return out.tokens.to(hidden.dtype)

    # ---- SmolVLA: the tower's all-visible patch mask, and the connector ---------------------------------

    def _on_encoder_start(self, encoder: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Drop the encoder's patch attention mask after checking that it hides no patch."""
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        if not isinstance(mask, Tensor):
            return None
        hides_nothing = bool(mask.all()) if mask.dtype == torch.bool else not bool(mask.any())
        if not hides_nothing:
            raise ValueError("grids_after_layer: the vision tower was called with a patch attention mask that hides "
                             "patches; GridS inside the encoder needs every patch (use grids_after_layer=None for "
                             "padded patch layouts)")
        if len(args) > 1:
            return (args[0], None, *args[2:]), kwargs
        return args, {**kwargs, "attention_mask": None}

    def _on_connector_input(self, connector: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """``"neighbourhood"``: ``(B, K*s*s, C)`` -> ``(B*K, s*s, C)``, each point's neighbourhood one ``s x s`` image
        to shuffle. ``"point"``: keep the ``(B, K, C)`` tokens for the output hook and hand the connector an empty
        batch, so its own ``s*s*C``-wide projection does no work."""
        if self._camera is None:
            return None
        if self._blocks is None:
            raise RuntimeError("the connector was reached but GridS did not run inside the vision tower")
        batch, k = self._blocks
        hidden = args[0] if args else kwargs["image_hidden_states"]
        area = int(connector.scale_factor) ** 2
        per_point = 1 if self.connector == "point" else area
        if hidden.shape[:2] != (batch, k * per_point):
            raise ValueError(f"the connector got {tuple(hidden.shape)}, expected ({batch}, {k * per_point}, C) from "
                             f"GridS (grids_connector={self.connector!r})")
        if self.connector == "point":
            self._point_tokens = hidden
            hidden = hidden.new_zeros((0, area, hidden.shape[-1]))
        else:
            hidden = hidden.reshape(batch * k, area, hidden.shape[-1])
        if args:
            return (hidden, *args[1:]), kwargs
        return (), {**kwargs, "image_hidden_states": hidden}

    def _on_connector_output(self, connector: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        """``"neighbourhood"``: ``(B*K, 1, D)`` -> ``(B, K, D)``; ``"point"``: the kept tokens through the connector
        as uniform blocks, ``(B, K, D)``."""
        if self._camera is None:
            return None
        batch, k = self._blocks  # type: ignore[misc]
        self._blocks = None
        if self.connector == "point":
            tokens, self._point_tokens = self._point_tokens, None
            return uniform_block_projection(connector, tokens)  # type: ignore[arg-type]
        if output.shape[:2] != (batch * k, 1):
            raise ValueError(f"the connector returned {tuple(output.shape)} for {batch * k} neighbourhoods, expected "
                             "one token each")
        return output.reshape(batch, k, output.shape[-1])


def install_encoder_grids(
    holder: nn.Module,
    tower: nn.Module,
    layers: Sequence[nn.Module],
    *,
    policy_type: str,
    after_layer: int,
    anchor_grid: tuple[int, int],
    fixed_grid: tuple[int, int] | None,
    patch_size: tuple[int, int],
    connector: nn.Module | None = None,
    vision_dim: int | None = None,
) -> EncoderGridS:
    """Hook ``holder.grids`` (already built at the vision width) into ``tower``; returns the adapter.

    Args:
        holder: the policy; the adapter is stored in its ``__dict__`` (not registered: the sampler is already
            ``holder.grids``). Its ``config.grids_connector`` picks SmolVLA's design (module docstring).
        tower: the vision transformer whose forward takes ``pixel_values`` (SmolVLM's or SigLIP's).
        layers: its encoder layers.
        anchor_grid: the patch grid the options are checked against (the configured image size).
        fixed_grid: a patch grid every call must have, or ``None`` to read it from each call's pixels.
        connector: SmolVLA's pixel-shuffle connector (its ``scale_factor`` sets the neighbourhood), or ``None``.
        vision_dim: the tower's width (needed with a connector, to check it for ``grids_connector="point"``).
    """
    grids: MultiCameraGridS = holder.grids  # type: ignore[assignment]
    config = holder.config
    design = getattr(config, "grids_connector", GRIDS_CONNECTORS[0])
    if connector is None and design != GRIDS_CONNECTORS[0]:
        raise ValueError(f"grids_connector must be {GRIDS_CONNECTORS[0]!r} for {policy_type}: its vision tower has no "
                         f"pixel-shuffle connector ('point' is for smolvla_grids with grids_after_layer set), got "
                         f"{design!r}")
    if connector is not None and design == "point":
        connector_projection(connector, int(vision_dim or 0))
    side = int(connector.scale_factor) if connector is not None and design == "neighbourhood" else 1
    check_encoder_options(policy_type, after_layer, len(layers), config.grids_k, anchor_grid, side,
                          config.grids_allow_oversample, design if connector is not None else None)
    adapter = EncoderGridS(grids, patch_size=patch_size, after_layer=after_layer, grid_size=fixed_grid,
                           neighbourhood=side, connector=design if connector is not None else None,
                           allow_oversample=config.grids_allow_oversample,
                           point_features=config.grids_point_features)
    adapter.hook_pre(tower, adapter._on_tower_start)
    adapter.hook_post(tower, adapter._on_tower_end)
    if config.grids_point_features == "stem":
        adapter.hook_post(patch_embedding(tower), adapter._on_stem_output)
    adapter.hook_pre(tower.encoder, adapter._on_encoder_start)
    adapter.hook_layers(layers)
    if connector is not None:
        adapter.hook_pre(connector, adapter._on_connector_input)
        adapter.hook_post(connector, adapter._on_connector_output)
    holder.__dict__["_grids_encoder"] = adapter
    return adapter
