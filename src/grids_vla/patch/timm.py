"""GridS inside timm Vision Transformers (``timm.models.vision_transformer.VisionTransformer`` and its subclasses).

``patch_timm(model, k=16)`` (exported as ``grids_vla.patch.timm``, like ToMe's ``tome.patch.timm``) registers a
:class:`~grids_vla.grids.GridSampler` as the submodule ``model.grids`` and installs forward hooks; timm's code is
neither copied nor replaced, and this module never imports timm (models are recognised by class name and structure),
so ``import grids_vla.patch`` works without it.

* ``after_layer=None`` (default): the tokens ``forward_features`` returns (after the final ``norm``) are resampled
  to K tokens, where the GridS paper prunes.
* ``after_layer=L`` (``0 <= L <= depth``): the tokens are resampled after block ``L`` (``0``: straight after the
  patch + position embedding), so the remaining blocks and the final norm run on ``P + K`` instead of ``P + N``
  tokens. The ``P`` prefix tokens (class, register, distillation) travel on with them.

``model.forward_features(x)`` returns ``(B, K, C)`` with ``prefix="drop"`` (default) or ``(B, P + K, C)`` with
``prefix="keep"``. ``model(x)`` keeps the prefix internally so timm's own head pools as it was built to: ``'token'``
pooling reads the class token, ``'avg'`` / ``'map'`` pooling runs over the K GridS tokens; to call ``forward_head``
on ``forward_features``' output yourself, patch with ``prefix="keep"`` (the head expects the prefix in front). The
patch grid is read off the patch embedding's input on every call, so other image sizes work where the model allows
them (``dynamic_img_size=True``). ``forward_intermediates`` (and the ``features_only`` wrappers built on it) is not
supported.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..grids import GridSampler
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

__all__ = ["patch_timm", "TimmGridS"]

# What the adapter needs of the model, beyond a class named VisionTransformer in its MRO.
_REQUIRED = ("patch_embed", "blocks", "norm", "num_prefix_tokens", "embed_dim")


def _is_timm_vit(model: nn.Module) -> bool:
    named = any(
        cls.__name__ == "VisionTransformer" and cls.__module__.split(".")[0] == "timm" for cls in type(model).__mro__
    )
    return named and all(hasattr(model, attr) for attr in _REQUIRED) and isinstance(model.blocks, nn.Sequential)


class TimmGridS(HookAdapter):
    """The module registered as ``model.grids`` of a patched timm ViT (see :class:`HookAdapter`).

    Reads the patch grid off the patch embedding's input; at the end of ``forward_features`` (the final ``norm``)
    resamples (``after_layer=None``) and drops the prefix unless ``model(x)``'s head still needs it.
    """

    def __init__(self, sampler: GridSampler, **kwargs: Any) -> None:
        super().__init__(sampler, **kwargs)
        self._in_model_call = False

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_in_model_call": False}

    # ---- hooks --------------------------------------------------------------------------------

    def _on_model_start(self, model: nn.Module, args: tuple, kwargs: dict) -> None:
        """``model(x)``: the head pools after ``forward_features``, so the prefix must stay in until then."""
        self._in_model_call = True

    def _on_model_end(self, model: nn.Module, args: tuple, output: Any) -> None:
        self._in_model_call = False  # registered with always_call: runs even if the forward raised

    def _on_patch_embed(self, patch_embed: nn.Module, args: tuple, output: Tensor) -> None:
        """Record the patch grid of this call from the image (or from an ``NHWC`` embedding), and with
        ``point_features="stem"`` the patch tokens themselves (before position embeddings) as ``(B, H*W, C)``."""
        self.last_output = None
        if isinstance(output, Tensor):
            self._keep_stem(output.flatten(1, 2) if output.dim() == 4 else output)
        pixels = args[0] if args else None
        if isinstance(output, Tensor) and output.dim() == 4:  # dynamic_img_size: (B, H, W, C)
            grid = (int(output.shape[1]), int(output.shape[2]))
        elif isinstance(pixels, Tensor) and pixels.dim() == 4:
            size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
            if hasattr(patch_embed, "dynamic_feat_size"):
                grid = tuple(int(v) for v in patch_embed.dynamic_feat_size(size))
            else:
                grid = (size[0] // self.patch_size[0], size[1] // self.patch_size[1])
        else:
            self._pixel_grid = None
            return
        self._use_grid(grid, "this input")

    def _on_norm_output(self, norm: nn.Module, args: tuple, output: Tensor) -> Tensor:
        """End of ``forward_features``: resample here (default), then drop the prefix unless the head needs it."""
        try:
            if self.after_layer is None:
                output = self._reduce(output)
            if self.prefix == "drop" and self.num_prefix_tokens and not self._in_model_call:
                output = output[:, self.num_prefix_tokens :]
            return output
        finally:
            self._pixel_grid = None
            self._look = None


def patch_timm(
    model: nn.Module,
    k: int = 16,
    *,
    after_layer: int | None = None,
    prefix: PrefixMode = "drop",
    grid_size: tuple[int, int] | None = None,
    point_features: str = "map",
    **grids_kwargs: Any,
) -> nn.Module:
    """Make a timm Vision Transformer return K GridS tokens per image from ``forward_features``; in place.

    Args:
        model: a timm ``VisionTransformer`` (any ``vit_*`` / ``deit_*`` model, with or without class, register or
            distillation tokens) or a subclass of it.
        k: tokens per image after GridS.
        after_layer: ``None`` to resample the tokens ``forward_features`` returns; ``L`` to resample after block
            ``L`` (``0`` = before the first block) so later blocks run on K tokens.
        prefix: ``"drop"`` (``forward_features`` returns ``(B, K, C)``) or ``"keep"`` (``(B, P + K, C)``, the
            prefix tokens first). ``model(x)`` pools with the prefix in either case.
        grid_size: a fixed patch grid ``(H, W)``; by default it is read from the input on each call. Also sets the
            anchor layout (by default the patch embedding's ``grid_size``).
        point_features: what the point predictor reads: ``"map"`` (the paper) the tokens it resamples; ``"stem"``
            ``patch_embed``'s tokens of the same image, before position embeddings (points placed by what each
            patch shows; ``grids_vla.grids.POINT_FEATURES``).
        **grids_kwargs: forwarded to :class:`~grids_vla.grids.GridSampler` (``hidden``, ``geometry``,
            ``predictor``, ``coords``, ``align_corners``, ``allow_oversample``, ...).

    Returns:
        ``model`` itself, patched; ``grids_vla.patch.unpatch(model)`` undoes it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not _is_timm_vit(model):
        raise TypeError(
            f"grids_vla.patch.timm does not support {type(model).__name__}: pass a timm VisionTransformer "
            "(timm.models.vision_transformer.VisionTransformer or a subclass, e.g. from timm.create_model('vit_...'))"
        )
    check_patch_args(model, "grids_vla.patch.timm", prefix, grids_kwargs, point_features)
    blocks = model.blocks
    check_after_layer(after_layer, len(blocks))
    patch_embed = model.patch_embed
    try:
        patch = as_pair(patch_embed.patch_size, "patch_embed.patch_size")
        default_grid = as_pair(patch_embed.grid_size, "patch_embed.grid_size")
    except (AttributeError, TypeError, ValueError):
        raise TypeError(
            f"grids_vla.patch.timm needs a patch embedding with patch_size and grid_size; "
            f"{type(patch_embed).__name__} has none"
        ) from None
    what = f"this {type(model).__name__} (patch_size={patch})"
    grid_size, anchor_grid = resolve_grid(k, grid_size, default_grid, grids_kwargs.get("allow_oversample", False), what)

    num_prefix = int(model.num_prefix_tokens)
    # The sampler always keeps the prefix; the adapter drops it at the end of forward_features when asked to.
    sampler = build_sampler(model, int(model.embed_dim), k, anchor_grid, num_prefix, "keep", grids_kwargs,
                            point_features)
    adapter = TimmGridS(
        sampler,
        patch_size=patch,
        num_prefix_tokens=num_prefix,
        prefix=prefix,
        after_layer=after_layer,
        grid_size=grid_size,
        point_features=point_features,
    )
    model.add_module(ADAPTER_NAME, adapter)
    adapter.hook_pre(model, adapter._on_model_start)
    model.register_forward_hook(adapter._on_model_end, always_call=True)
    adapter.hook_post(patch_embed, adapter._on_patch_embed)
    adapter.hook_post(model.norm, adapter._on_norm_output)
    adapter.hook_layers(blocks)
    return model
