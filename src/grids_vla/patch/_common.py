"""Host-independent parts of the adapters: the base adapter module, the argument checks and ``unpatch``.

Each host library has its own adapter module (``hf_transformers``, ``timm``); they are siblings over
:class:`HookAdapter` and import only the core and this module, never each other.

An adapter is an ``nn.Module`` registered inside the host model (so its sampler trains, moves with
``.to()`` and is saved in the host's ``state_dict``) whose bound methods are installed as forward hooks
on host modules. Keeping the hooks as bound methods of a submodule, and finding them again by owner
rather than by stored handles, means a ``copy.deepcopy`` of a patched model is patched on its own
sampler and can be unpatched independently of the original.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .._checks import check_choice
from ..grids import POINT_FEATURES, GridSampler
from ..reducers.base import PrefixMode, ReducerOutput

__all__ = ["HookAdapter", "unpatch", "get_adapter", "load_grids", "ADAPTER_NAME"]

#: Attribute name under which an adapter is registered in the host module it patches.
ADAPTER_NAME = "grids"

# hook table -> the flag tables keyed by the same hook id
_HOOK_TABLES = {
    "_forward_hooks": ("_forward_hooks_with_kwargs", "_forward_hooks_always_called"),
    "_forward_pre_hooks": ("_forward_pre_hooks_with_kwargs",),
}


class HookAdapter(nn.Module):
    """Base of every adapter, registered as ``<host>.grids``: owns the sampler and the hooks it installs.

    Holds what does not depend on the host library: the sampler call on ``(B, P + H*W, C)`` hidden states, the
    patch grid of the current call, and the hooks inside the encoder (``after_layer``). A subclass adds the hooks
    at the host's boundaries: where the grid is read off the input, and where the output is resampled or its
    prefix dropped. After each forward, ``last_output`` holds the sampler's
    :class:`~grids_vla.reducers.base.ReducerOutput` (its ``coords`` show where the K tokens looked;
    ``aux["logits"]`` allows a loss on them).
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
        point_features: str = "map",
    ) -> None:
        super().__init__()
        check_choice("point_features", point_features, POINT_FEATURES)
        self.sampler = sampler
        self.patch_size = patch_size
        self.num_prefix_tokens = num_prefix_tokens
        self.prefix = prefix
        self.after_layer = after_layer
        self.fixed_grid = grid_size
        self.point_features = point_features
        self.last_output: ReducerOutput | None = None
        self._pixel_grid: tuple[int, int] | None = None
        self._look: Tensor | None = None  # point_features="stem": this call's patch-embedding tokens (B, H*W, C)

    def __getstate__(self) -> dict[str, Any]:
        # the last call's output carries an autograd graph, which cannot be deep-copied or pickled
        return {**super().__getstate__(), "last_output": None, "_pixel_grid": None, "_look": None}

    def extra_repr(self) -> str:
        return (
            f"after_layer={self.after_layer}, prefix={self.prefix!r}, num_prefix_tokens={self.num_prefix_tokens}, "
            f"patch_size={self.patch_size}, point_features={self.point_features!r}"
        )

    # ---- installing and removing the hooks ------------------------------------------------------

    def hook_pre(self, module: nn.Module, fn: Callable) -> None:
        """Install ``fn`` (a bound method of ``self``) as a forward pre-hook with kwargs on ``module``."""
        module.register_forward_pre_hook(fn, with_kwargs=True)

    def hook_post(self, module: nn.Module, fn: Callable) -> None:
        """Install ``fn`` (a bound method of ``self``) as a forward hook on ``module``."""
        module.register_forward_hook(fn)

    def hook_layers(self, layers: Sequence[nn.Module]) -> None:
        """Resample at the input of layer ``after_layer``, or at the last layer's output when it equals the depth."""
        if self.after_layer is None:
            return
        if self.after_layer < len(layers):
            self.hook_pre(layers[self.after_layer], self._on_layer_input)
        else:
            self.hook_post(layers[len(layers) - 1], self._on_last_layer_output)

    def remove_hooks(self, root: nn.Module) -> int:
        """Remove every hook under ``root`` that is a method of this adapter; returns how many."""
        removed = 0
        for module in root.modules():
            for table, flag_tables in _HOOK_TABLES.items():
                hooks = getattr(module, table)
                for key in [k for k, fn in hooks.items() if getattr(fn, "__self__", None) is self]:
                    del hooks[key]
                    for flags in flag_tables:
                        getattr(module, flags).pop(key, None)
                    removed += 1
        return removed

    # ---- hooks inside the encoder ---------------------------------------------------------------

    def _on_layer_input(self, layer: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """``after_layer < depth``: resample the hidden states entering layer ``after_layer``."""
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
        """``after_layer == depth``: resample the last layer's output, before the final norm."""
        if isinstance(output, tuple):
            return (self._reduce(output[0]), *output[1:])
        return self._reduce(output)

    # ---- the resampling -------------------------------------------------------------------------

    def _use_grid(self, grid: tuple[int, int], source: str) -> None:
        """Record the patch grid of this call; ``source`` names the input it was read from, for the error."""
        if self.fixed_grid is not None and grid != self.fixed_grid:
            raise ValueError(
                f"the adapter was patched with grid_size={self.fixed_grid}, but {source} gives a "
                f"{grid[0]}x{grid[1]} patch grid"
            )
        self._pixel_grid = grid

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
                f"{spatial} is not a square number; call the patched model with its image input (the grid is then "
                "read from the image size) or patch with grid_size=(H, W)"
            )
        return side, side

    def _reduce(self, hidden: Tensor) -> Tensor:
        grid = self._grid_for(hidden.shape[1])
        if hidden.shape[1] != self.num_prefix_tokens + grid[0] * grid[1]:
            raise ValueError(
                f"GridS expected {self.num_prefix_tokens} prefix + {grid[0]}x{grid[1]} patch tokens, got "
                f"{hidden.shape[1]} tokens; token dropout (e.g. timm's patch_drop_rate > 0 in training) or a "
                "resampled token sequence cannot be put back on the patch grid"
            )
        out = self.sampler(hidden, grid, look=self.stem_look())
        self.last_output = out
        return out.tokens

    def stem_look(self) -> Tensor | None:
        """What the point predictor reads besides the map: this call's stem tokens with ``point_features="stem"``
        (an error if the patch embedding did not run), else ``None``."""
        if self.point_features != "stem":
            return None
        if self._look is None:
            raise ValueError("point_features='stem': the patch embedding did not run in this call, so there are "
                             "no stem tokens for the point predictor (call the patched model with its image)")
        return self._look

    def _keep_stem(self, tokens: Tensor) -> None:
        """Record this call's patch-embedding tokens ``(B, H*W, C)`` (before position embeddings) for a
        ``point_features="stem"`` predictor."""
        self._look = tokens if self.point_features == "stem" else None


# ---- what every patch_* function checks and wires the same way -------------------------------------------------

# Sampler arguments an adapter sets from the host model itself.
RESERVED_KWARGS = ("dim", "num_prefix_tokens", "prefix", "cond_dim", "look_dim")


def check_patch_args(
    host: nn.Module, api: str, prefix: str, grids_kwargs: Mapping[str, Any], point_features: str = "map"
) -> None:
    """Refuse a host already patched (or with a ``grids`` attribute), reserved sampler arguments, a bad prefix, or
    ``point_features="stem"`` without predicted points (an unknown ``point_features`` is refused by the adapter)."""
    if isinstance(getattr(host, ADAPTER_NAME, None), HookAdapter):
        raise ValueError(f"{type(host).__name__} is already patched with GridS; call grids_vla.patch.unpatch first")
    if hasattr(host, ADAPTER_NAME):
        raise ValueError(f"{type(host).__name__} already has an attribute '{ADAPTER_NAME}'; cannot register GridS")
    for key in RESERVED_KWARGS:
        if key in grids_kwargs:
            why = {"cond_dim": "conditioning is not supported by the adapter",
                   "look_dim": "pass point_features='stem' to have the points read the patch embedding"}
            raise ValueError(f"do not pass {key}= to {api}: {why.get(key, 'it is set from the model')}")
    if prefix not in ("drop", "keep"):
        raise ValueError(f"prefix must be 'drop' or 'keep', got {prefix!r}")
    coords = grids_kwargs.get("coords", "predicted")
    if point_features == "stem" and coords != "predicted":
        raise ValueError(f"point_features='stem' is what the point predictor reads; coords={coords!r} predicts none")


def as_pair(value: Any, name: str) -> tuple[int, int]:
    """``7`` -> ``(7, 7)``, ``(7, 5)`` -> ``(7, 5)``; ``name`` names the setting in the error."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value), int(value)
    try:
        a, b = value
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair, got {value!r}") from None


def check_after_layer(after_layer: int | None, depth: int) -> None:
    if after_layer is not None and (
        isinstance(after_layer, bool) or not isinstance(after_layer, int) or not 0 <= after_layer <= depth
    ):
        raise ValueError(f"after_layer must be None or an int in [0, {depth}] for this model, got {after_layer!r}")


def resolve_grid(
    k: int, grid_size: Sequence[int] | None, default_grid: tuple[int, int], allow_oversample: bool, what: str
) -> tuple[tuple[int, int] | None, tuple[int, int]]:
    """Check ``k`` and ``grid_size``; returns ``(fixed grid or None, anchor grid)``; ``what`` names the model."""
    fixed = None
    if grid_size is not None:
        try:
            fixed = (int(grid_size[0]), int(grid_size[1]))
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"grid_size must be a pair (H, W), got {grid_size!r}") from None
    anchor = fixed or default_grid
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > anchor[0] * anchor[1] and not allow_oversample:
        raise ValueError(
            f"k={k} exceeds the {anchor[0] * anchor[1]} patches of the {anchor[0]}x{anchor[1]} grid of {what}; "
            "pass allow_oversample=True to allow it"
        )
    return fixed, anchor


def build_sampler(
    host: nn.Module,
    dim: int,
    k: int,
    anchor_grid: tuple[int, int],
    num_prefix: int,
    prefix: PrefixMode,
    grids_kwargs: Mapping[str, Any],
    point_features: str = "map",
) -> GridSampler:
    """A :class:`GridSampler` on the host's device (``point_features="stem"``: its predictor reads ``dim``-wide
    patch-embedding tokens)."""
    look_dim = dim if point_features == "stem" else None
    sampler = GridSampler(dim, k, grid_size=anchor_grid, num_prefix_tokens=num_prefix, prefix=prefix,
                          look_dim=look_dim, **grids_kwargs)
    ref = next(host.parameters(), None)
    if ref is not None:
        sampler.to(device=ref.device)
    return sampler


def _adapters(model: nn.Module) -> list[tuple[nn.Module, HookAdapter]]:
    return [
        (parent, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if name == ADAPTER_NAME and isinstance(child, HookAdapter)
    ]


def get_adapter(model: nn.Module) -> HookAdapter:
    """The GridS adapter inside a patched model (its ``sampler`` and ``last_output`` live there)."""
    found = _adapters(model)
    if not found:
        raise ValueError(f"{type(model).__name__} is not patched with GridS (no '{ADAPTER_NAME}' adapter found)")
    return found[0][1]


def unpatch(model: nn.Module) -> nn.Module:
    """Undo a ``grids_vla.patch.*`` call in place: remove the hooks and the GridS submodule; returns ``model``.

    Afterwards the model computes exactly what it computed before patching, and its ``state_dict`` no
    longer has the ``grids.*`` entries.
    """
    found = _adapters(model)
    if not found:
        raise ValueError(f"{type(model).__name__} is not patched with GridS; nothing to unpatch")
    for parent, adapter in found:
        adapter.remove_hooks(model)
        delattr(parent, ADAPTER_NAME)
    return model


def _read_checkpoint(source: str | os.PathLike | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            files = [path / shard for shard in shards]
        elif (path / "model.safetensors").is_file():
            files = [path / "model.safetensors"]
        else:
            raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no checkpoint at {path}")
    from safetensors.torch import load_file

    state: dict[str, Tensor] = {}
    for file in files:
        state.update(load_file(file))
    return state


def load_grids(model: nn.Module, source: str | os.PathLike | Mapping[str, Tensor]) -> nn.Module:
    """Load the GridS weights of a patched model from a ``save_pretrained`` folder, a safetensors file or a dict.

    ``from_pretrained`` of the host class restores only the host's weights (it reports the ``grids.*``
    entries as unexpected); patch the loaded model with the same arguments, then call this. Loading is
    strict: every GridS parameter must be in ``source`` and no ``grids`` entry of ``source`` may be left over.
    """
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, HookAdapter)]
    if not found:
        raise ValueError(f"{type(model).__name__} is not patched with GridS; patch it before load_grids")
    state = _read_checkpoint(source)
    used: set[str] = set()
    for name, adapter in found:
        lead = f"{name}."
        part = {key[len(lead) :]: value for key, value in state.items() if key.startswith(lead)}
        used.update(lead + key for key in part)
        if not part:
            raise KeyError(f"the checkpoint has no '{lead}*' entries: it was saved from a model without GridS")
        adapter.load_state_dict(part, strict=True)
    extra = sorted(k for k in state if k not in used and f"{ADAPTER_NAME}." in k)
    if extra:
        raise KeyError(f"GridS entries in the checkpoint that this patched model has no place for: {extra[:5]}")
    return model
