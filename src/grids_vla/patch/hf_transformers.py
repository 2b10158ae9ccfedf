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

from typing import Any, NamedTuple

from torch import Tensor, nn

from ..reducers.base import PrefixMode
from ._common import (
    ADAPTER_NAME,
    HookAdapter,
    as_pair,
    build_sampler,
    check_after_layer,
    check_patch_args,
    resolve_grid,
)

__all__ = ["patch_transformers", "patch_embedding", "TransformersGridS", "SUPPORTED_TOWERS"]


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


def patch_embedding(tower: nn.Module) -> nn.Module:
    """The module that turns ``pixel_values`` into patch tokens, before position embeddings: SigLIP's and CLIP's
    ``embeddings.patch_embedding`` (a ``Conv2d``, ``(B, C, H, W)`` out), DINOv2's ``embeddings.patch_embeddings``
    (``(B, H*W, C)`` out)."""
    embeddings = tower.embeddings
    for name in ("patch_embedding", "patch_embeddings"):
        module = getattr(embeddings, name, None)
        if isinstance(module, nn.Module):
            return module
    raise TypeError(f"point_features='stem' needs the tower's patch embedding; {type(embeddings).__name__} has no "
                    "patch_embedding / patch_embeddings module")


class TransformersGridS(HookAdapter):
    """The module registered as ``<tower>.grids`` of a patched Hugging Face tower (see :class:`HookAdapter`).

    Reads the patch grid off ``pixel_values`` at the tower's input; at its output resamples ``last_hidden_state``
    (``after_layer=None``) or drops the prefix tokens that travelled through the encoder. With
    ``point_features="stem"`` it also keeps the patch embedding's output for the point predictor.
    """

    def _on_stem_output(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        """``point_features="stem"``: keep the patch tokens, ``(B, C, H, W)`` or ``(B, H*W, C)`` -> ``(B, H*W, C)``."""
        self._keep_stem(output.flatten(2).transpose(1, 2) if output.dim() == 4 else output)

    def _on_tower_start(self, tower: nn.Module, args: tuple, kwargs: dict) -> None:
        """Read the patch grid off ``pixel_values`` so the sampler knows ``(H, W)`` exactly."""
        self._pixel_grid = None
        self._look = None
        self.last_output = None
        pixels = args[0] if args else kwargs.get("pixel_values")
        if isinstance(pixels, Tensor):
            if pixels.dim() != 4:
                raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(pixels.shape)}")
            h, w = pixels.shape[-2:]
            self._use_grid((h // self.patch_size[0], w // self.patch_size[1]), f"a {h}x{w} px image")

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
            self._look = None


def patch_transformers(
    model: nn.Module,
    k: int = 16,
    *,
    after_layer: int | None = None,
    prefix: PrefixMode = "drop",
    grid_size: tuple[int, int] | None = None,
    point_features: str = "map",
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
        point_features: what the point predictor reads: ``"map"`` (the paper) the tokens it resamples; ``"stem"``
            the patch embedding's tokens of the same image, before position embeddings (points placed by what each
            patch shows; ``grids_vla.grids.POINT_FEATURES``).
        **grids_kwargs: forwarded to :class:`~grids_vla.grids.GridSampler` (``hidden``, ``geometry``,
            ``predictor``, ``coords``, ``align_corners``, ...).

    Returns:
        ``model`` itself, patched; ``grids_vla.patch.unpatch(model)`` undoes it.
    """
    tower, cls_name = _find_tower(model)
    check_patch_args(tower, "grids_vla.patch.transformers", prefix, grids_kwargs, point_features)
    spec = SUPPORTED_TOWERS[cls_name]
    config = tower.config
    layers = _get_path(tower, spec.layers)
    check_after_layer(after_layer, len(layers))

    family = next(f for f in _PREFIX if cls_name.startswith(f))
    num_prefix = _PREFIX[family] + (int(config.num_register_tokens) if spec.register_tokens else 0)
    patch = as_pair(config.patch_size, "config.patch_size")
    image = as_pair(config.image_size, "config.image_size")
    what = f"this {cls_name} (image_size={config.image_size}, patch_size={config.patch_size})"
    grid_size, anchor_grid = resolve_grid(k, grid_size, (image[0] // patch[0], image[1] // patch[1]),
                                          grids_kwargs.get("allow_oversample", False), what)
    # Inside the encoder the prefix must travel on (attention and the host's CLS pooling need it).
    sampler_prefix: PrefixMode = prefix if after_layer is None else "keep"
    stem = patch_embedding(tower) if point_features == "stem" else None
    sampler = build_sampler(tower, config.hidden_size, k, anchor_grid, num_prefix, sampler_prefix, grids_kwargs,
                            point_features)
    adapter = TransformersGridS(
        sampler, patch_size=patch, num_prefix_tokens=num_prefix, prefix=prefix, after_layer=after_layer,
        grid_size=grid_size, point_features=point_features,
    )
    tower.add_module(ADAPTER_NAME, adapter)
    adapter.hook_pre(tower, adapter._on_tower_start)
    adapter.hook_post(tower, adapter._on_tower_end)
    if stem is not None:
        adapter.hook_post(stem, adapter._on_stem_output)
    adapter.hook_layers(layers)
    return model

