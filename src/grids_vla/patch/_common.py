"""Host-independent parts of the adapters: the hook-owning module and ``unpatch``.

An adapter is an ``nn.Module`` registered inside the host model (so its sampler trains, moves with
``.to()`` and is saved in the host's ``state_dict``) whose bound methods are installed as forward hooks
on host modules. Keeping the hooks as bound methods of a submodule, and finding them again by owner
rather than by stored handles, means a ``copy.deepcopy`` of a patched model is patched on its own
sampler and can be unpatched independently of the original.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from torch import Tensor, nn

__all__ = ["HookAdapter", "unpatch", "get_adapter", "load_grids", "ADAPTER_NAME"]

#: Attribute name under which an adapter is registered in the host module it patches.
ADAPTER_NAME = "grids"

# hook table -> the flag tables keyed by the same hook id
_HOOK_TABLES = {
    "_forward_hooks": ("_forward_hooks_with_kwargs", "_forward_hooks_always_called"),
    "_forward_pre_hooks": ("_forward_pre_hooks_with_kwargs",),
}


class HookAdapter(nn.Module):
    """Base of every adapter: installs its own bound methods as hooks and removes exactly those."""

    def hook_pre(self, module: nn.Module, fn: Callable) -> None:
        """Install ``fn`` (a bound method of ``self``) as a forward pre-hook with kwargs on ``module``."""
        module.register_forward_pre_hook(fn, with_kwargs=True)

    def hook_post(self, module: nn.Module, fn: Callable) -> None:
        """Install ``fn`` (a bound method of ``self``) as a forward hook on ``module``."""
        module.register_forward_hook(fn)

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
