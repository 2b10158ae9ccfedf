"""GridS inside Hugging Face ``transformers`` vision towers: SigLIP, CLIP and DINOv2 (with or without registers).

``patch_transformers(model, k=16)`` (exported as ``grids_vla.patch.transformers``) registers a
:class:`~grids_vla.grids.GridSampler` as the submodule ``grids`` of the vision tower and installs forward
hooks, so nothing of the host's code is copied or replaced:

* ``after_layer=None`` (default): the tower's output ``last_hidden_state`` (after its final norm) is
  resampled to K tokens, the point where the GridS paper prunes. ``pooler_output`` is left as the host
  computed it from all N tokens.
* ``after_layer=L`` (``0 <= L <= num_layers``): the hidden states are resampled after encoder layer ``L``
  (``0``: straight after the embeddings), so the remaining layers, the final norm and the pooling head run
  on ``P + K`` instead of ``P + N`` tokens; this is what cuts the encoder's FLOPs. The ``P`` prefix tokens
  (CLS, registers) always travel on inside the encoder so the host's CLS pooling still reads them;
  ``prefix="drop"`` removes them from ``last_hidden_state`` at the end.

The patch grid is read from ``pixel_values`` on every call (``(H // patch, W // patch)``), so
``interpolate_pos_encoding=True`` with non-square images works. The adapter never imports ``transformers``:
towers are recognised by class name (their own or a base class's) and structure.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from torch import Tensor, nn

from ..grids import GridSampler
from ..reducers.base import PrefixMode, ReducerOutput
from ._common import (
    ADAPTER_NAME,
    HookAdapter,
    build_sampler,
    check_after_layer,
    check_patch_args,
    hook_after_layer,
    resolve_grid,
)

__all__ = ["patch_transformers", "TransformersGridS", "SUPPORTED_TOWERS"]


class _TowerSpec(NamedTuple):
    layers: str  # attribute path of the encoder's layer list, from the tower
    register_tokens: bool  # whether config.num_register_tokens adds to the single CLS token


# Tower classes whose forward takes pixel_values and runs embeddings -> encoder layers -> norm.
# transformers 4.x wraps SigLIP's and CLIP's towers in *VisionModel.vision_model (a *VisionTransformer);
# 5.x made *VisionModel the tower itself. Both spellings are listed. Prefix tokens: SigLIP 0, CLIP 1 (CLS),
# DINOv2 1 (CLS), DINOv2 with registers 1 + num_register_tokens.
_PREFIX = {"Siglip": 0, "CLIP": 1, "Dinov2": 1}
SUPPORTED_TOWERS: dict[str, _TowerSpec] = {
    "SiglipVisionModel": _TowerSpec("encoder.layers", False),
    "SiglipVisionTransformer": _TowerSpec("encoder.layers", False),
    "CLIPVisionModel": _TowerSpec("encoder.layers", False),
    "CLIPVisionTransformer": _TowerSpec("encoder.layers", False),
    "Dinov2Model": _TowerSpec("encoder.layer", False),
    "Dinov2WithRegistersModel": _TowerSpec("encoder.layer", True),
}
# Attributes under which composite models (SiglipModel, CLIPModel, CLIPVisionModelWithProjection,
# 4.x SiglipVisionModel, VLMs such as PaliGemma's inner model) keep their vision tower.
_TOWER_ATTRS = ("vision_model", "vision_tower")


def _tower_class(module: nn.Module) -> str | None:
    for cls in type(module).__mro__:
        if cls.__name__ in SUPPORTED_TOWERS and hasattr(module, "embeddings") and hasattr(module, "config"):
            return cls.__name__
    return None


def _find_tower(model: nn.Module) -> tuple[nn.Module, str]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name = _tower_class(model)
    if name is not None:
        return model, name
    for attr in _TOWER_ATTRS:
        sub = getattr(model, attr, None)
        if isinstance(sub, nn.Module) and (name := _tower_class(sub)) is not None:
            return sub, name
    supported = ", ".join(sorted(SUPPORTED_TOWERS))
    raise TypeError(
        f"grids_vla.patch.transformers does not support {type(model).__name__}: pass a SigLIP, CLIP or DINOv2 "
        f"vision tower ({supported}) or a model holding one as .vision_model / .vision_tower"
    )


def _get_path(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value), int(value)
    try:
        a, b = value
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"config.{name} must be an int or a pair, got {value!r}") from None


class TransformersGridS(HookAdapter):
    """The module registered as ``<tower>.grids``: owns the sampler and the hooks of one patched tower.

    After each forward, ``last_output`` holds the sampler's :class:`~grids_vla.reducers.base.ReducerOutput`
    (its ``coords`` show where the K tokens looked; ``aux["logits"]`` allows a loss on them).
    """

    def __init__(
        self,
        sampler: GridSampler,
        *,
        patch_size: tuple[int, int],
        num_prefix_tokens: int,
        prefix: PrefixMode,
        after_layer: int | None,
        grid_size: tuple[int, int] | None,
    ) -> None:
        super().__init__()
        self.sampler = sampler
        self.patch_size = patch_size
        self.num_prefix_tokens = num_prefix_tokens
        self.prefix = prefix
        self.after_layer = after_layer
        self.fixed_grid = grid_size
        self.last_output: ReducerOutput | None = None
        self._pixel_grid: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # the last call's output carries an autograd graph, which cannot be deep-copied or pickled
        state = super().__getstate__()
        return {**state, "last_output": None, "_pixel_grid": None}

    def extra_repr(self) -> str:
        return (
            f"after_layer={self.after_layer}, prefix={self.prefix!r}, num_prefix_tokens={self.num_prefix_tokens}, "
            f"patch_size={self.patch_size}"
        )

    # ---- hooks --------------------------------------------------------------------------------

    def _on_tower_start(self, tower: nn.Module, args: tuple, kwargs: dict) -> None:
        """Read the patch grid off ``pixel_values`` so the sampler knows ``(H, W)`` exactly."""
        self._pixel_grid = None
        self.last_output = None
        pixels = args[0] if args else kwargs.get("pixel_values")
        if isinstance(pixels, Tensor):
            if pixels.dim() != 4:
                raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(pixels.shape)}")
            grid = (pixels.shape[-2] // self.patch_size[0], pixels.shape[-1] // self.patch_size[1])
            if self.fixed_grid is not None and grid != self.fixed_grid:
                raise ValueError(
                    f"the adapter was patched with grid_size={self.fixed_grid}, but a "
                    f"{pixels.shape[-2]}x{pixels.shape[-1]} px image gives a {grid[0]}x{grid[1]} patch grid"
                )
            self._pixel_grid = grid

    def _on_tower_end(self, tower: nn.Module, args: tuple, output: Any) -> Any:
        """Resample the tower's output (default) or strip the prefix that travelled through the encoder."""
        try:
            hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
            if self.after_layer is None:
                hidden = self._reduce(hidden)
            elif self.prefix == "drop" and self.num_prefix_tokens:
                hidden = hidden[:, self.num_prefix_tokens :]
            else:
                return output
            if isinstance(output, tuple):
                return (hidden, *output[1:])
            output.last_hidden_state = hidden
            return output
        finally:
            self._pixel_grid = None

    def _on_layer_input(self, layer: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """``after_layer < num_layers``: resample the hidden states entering layer ``after_layer``."""
        if args:
            hidden, rest = args[0], args[1:]
        else:
            hidden, rest = kwargs.pop("hidden_states"), ()
        n = hidden.shape[1]
        for value in (*rest, *kwargs.values()):
            if isinstance(value, Tensor) and value.dim() >= 2 and value.shape[-1] == n:
                raise ValueError(
                    f"layer {self.after_layer} got a {tuple(value.shape)} mask over the {n} tokens; GridS inside the "
                    "encoder cannot follow a token mask (drop the attention_mask, or use after_layer=None)"
                )
        reduced = self._reduce(hidden)
        if args:
            return (reduced, *rest), kwargs
        return (), {**kwargs, "hidden_states": reduced}

    def _on_last_layer_output(self, layer: nn.Module, args: tuple, output: Any) -> Any:
        """``after_layer == num_layers``: resample the last layer's output, before the final norm."""
        if isinstance(output, tuple):
            return (self._reduce(output[0]), *output[1:])
        return self._reduce(output)

    # ---- the resampling -------------------------------------------------------------------------

    def _grid_for(self, n_tokens: int) -> tuple[int, int]:
        if self._pixel_grid is not None:
            return self._pixel_grid
        if self.fixed_grid is not None:
            return self.fixed_grid
        spatial = n_tokens - self.num_prefix_tokens
        side = math.isqrt(max(spatial, 0))
        if spatial < 1 or side * side != spatial:
            raise ValueError(
                f"cannot infer the patch grid: {n_tokens} tokens minus {self.num_prefix_tokens} prefix tokens = "
                f"{spatial} is not a square number; call the patched model with pixel_values (the grid is then "
                "read from the image size) or patch with grid_size=(H, W)"
            )
        return side, side

    def _reduce(self, hidden: Tensor) -> Tensor:
        grid = self._grid_for(hidden.shape[1])
        out = self.sampler(hidden, grid)
        self.last_output = out
        return out.tokens


def patch_transformers(
    model: nn.Module,
    k: int = 16,
    *,
    after_layer: int | None = None,
    prefix: PrefixMode = "drop",
    grid_size: tuple[int, int] | None = None,
    **grids_kwargs: Any,
) -> nn.Module:
    """Make a Hugging Face SigLIP / CLIP / DINOv2 vision tower return K GridS tokens per image; in place.

    Args:
        model: a tower (``SiglipVisionModel``, ``CLIPVisionModel``, ``Dinov2Model``,
            ``Dinov2WithRegistersModel``, or the 4.x ``*VisionTransformer``), or a model holding one as
            ``.vision_model`` / ``.vision_tower`` (``SiglipModel``, ``CLIPModel``, ...).
        k: tokens per image after GridS.
        after_layer: ``None`` to resample the tower's output; ``L`` to resample after encoder layer ``L``
            (``0`` = before the first layer) so later layers run on K tokens.
        prefix: ``"drop"`` (``last_hidden_state`` is ``(B, K, C)``) or ``"keep"`` (``(B, P + K, C)``, the
            CLS / register tokens first). SigLIP has no prefix tokens.
        grid_size: a fixed patch grid ``(H, W)``; by default it is read from ``pixel_values`` on each call.
            Also sets the anchor layout (by default the config's ``image_size // patch_size`` grid).
        **grids_kwargs: forwarded to :class:`~grids_vla.grids.GridSampler` (``hidden``, ``geometry``,
            ``predictor``, ``coords``, ``align_corners``, ...).

    Returns:
        ``model`` itself, patched; ``grids_vla.patch.unpatch(model)`` undoes it.
    """
    tower, cls_name = _find_tower(model)
    check_patch_args(tower, "grids_vla.patch.transformers", prefix, grids_kwargs)
    spec = SUPPORTED_TOWERS[cls_name]
    config = tower.config
    layers = _get_path(tower, spec.layers)
    check_after_layer(after_layer, len(layers))

    family = next(f for f in _PREFIX if cls_name.startswith(f))
    num_prefix = _PREFIX[family] + (int(config.num_register_tokens) if spec.register_tokens else 0)
    patch = _pair(config.patch_size, "patch_size")
    image = _pair(config.image_size, "image_size")
    what = f"this {cls_name} (image_size={config.image_size}, patch_size={config.patch_size})"
    grid_size, anchor_grid = resolve_grid(k, grid_size, (image[0] // patch[0], image[1] // patch[1]),
                                          grids_kwargs.get("allow_oversample", False), what)
    # Inside the encoder the prefix must travel on (attention and the host's CLS pooling need it).
    sampler_prefix: PrefixMode = prefix if after_layer is None else "keep"
    sampler = build_sampler(tower, config.hidden_size, k, anchor_grid, num_prefix, sampler_prefix, grids_kwargs)
    adapter = TransformersGridS(
        sampler, patch_size=patch, num_prefix_tokens=num_prefix, prefix=prefix, after_layer=after_layer,
        grid_size=grid_size,
    )
    tower.add_module(ADAPTER_NAME, adapter)
    adapter.hook_pre(tower, adapter._on_tower_start)
    adapter.hook_post(tower, adapter._on_tower_end)
    hook_after_layer(adapter, layers, after_layer)
    return model

