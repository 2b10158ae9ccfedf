"""Host-independent parts of the adapters: the hook-owning module and ``unpatch``.

An adapter is an ``nn.Module`` registered inside the host model (so its sampler trains, moves with
``.to()`` and is saved in the host's ``state_dict``) whose bound methods are installed as forward hooks
on host modules. Keeping the hooks as bound methods of a submodule, and finding them again by owner
rather than by stored handles, means a ``copy.deepcopy`` of a patched model is patched on its own
sampler and can be unpatched independently of the original.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["HookAdapter", "unpatch", "get_adapter", "ADAPTER_NAME"]

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
