"""Exact weight conversion between the PyTorch GridS ``state_dict`` and Flax (linen) params.

Names (``<p>`` is any prefix path: ``""``, ``sampler.`` / ``sampler/`` for a shared
:class:`MultiCameraGridS`, ``samplers.<cam>.`` / ``samplers_<cam>/`` for per-camera samplers):

====================================  ===================================  ==========
PyTorch ``state_dict`` key            Flax ``params`` path                 value
====================================  ===================================  ==========
``<p>norm.weight``                    ``<p>norm/scale``                    same
``<p>norm.bias``                      ``<p>norm/bias``                     same
``<p>film.weight`` ``(2C, D)``        ``<p>film/kernel`` ``(D, 2C)``       transposed
``<p>film.bias``                      ``<p>film/bias``                     same
``<p>mlp.{0,2}.weight``               ``<p>mlp_{0,2}/kernel``              transposed
``<p>mlp.{0,2}.bias``                 ``<p>mlp_{0,2}/bias``                same
``<p>geometry.mlp.{0,2}.weight``      ``<p>geometry/mlp_{0,2}/kernel``     transposed
``<p>geometry.mlp.{0,2}.bias``        ``<p>geometry/mlp_{0,2}/bias``       same
``<p>point_attn.queries`` ``(K, h)``  ``<p>point_attn/queries``            same
``<p>point_attn.norm.weight``         ``<p>point_attn/norm/scale``         same
``<p>point_attn.norm.bias``           ``<p>point_attn/norm/bias``          same
``<p>point_attn.{key,cond}.weight``   ``<p>point_attn/{key,cond}/kernel``  transposed
``<p>point_attn.{key,cond}.bias``     ``<p>point_attn/{key,cond}/bias``    same
``<p>context.0.weight``               ``<p>context_0/scale``               same
``<p>context.0.bias``                 ``<p>context_0/bias``                same
``<p>context.1.weight``               ``<p>context_1/kernel``              transposed
``<p>context.1.bias``                 ``<p>context_1/bias``                same
``camera_embed.weight``               ``camera_embed/embedding``           same
====================================  ===================================  ==========

The Fourier frequencies are a non-persistent buffer in PyTorch and a constant in JAX, so neither side
stores them. Values are copied bit for bit (a transpose is exact) and keep their dtype, except that a
``torch.bfloat16`` tensor is read as float32 (exact: every bfloat16 value is a float32 value). Only
numpy and the tensors' own ``.detach().cpu().numpy()`` are used, so torch is not imported here;
:func:`flax_to_torch` returns numpy arrays (load them with ``{k: torch.from_numpy(v) ...}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["flax_to_torch", "torch_to_flax"]

_LEAF_MODULES = {"norm", "film", "mlp_0", "mlp_2", "camera_embed", "key", "cond", "context_0", "context_1"}
_NORMS = {"norm", "context_0"}  # LayerNorms: torch ``weight`` is Flax ``scale``
_INDEXED = ("mlp", "context", "samplers")  # torch ``<name>.<i>`` is Flax ``<name>_<i>``
_CONTAINERS = {"geometry", "sampler", "point_attn"}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return np.array(value.numpy(), copy=True)
    return np.array(value, copy=True)


def _flax_module_path(parts: list[str], key: str) -> list[str]:
    """Torch module path (``["samplers", "cam", "mlp", "0"]``) -> Flax names (``["samplers_cam", "mlp_0"]``)."""
    out: list[str] = []
    i = 0
    while i < len(parts):
        name = parts[i]
        if name in _INDEXED and i + 1 < len(parts):
            name = f"{name}_{parts[i + 1]}"
            i += 1
        if not (name in _LEAF_MODULES or name in _CONTAINERS or name.startswith("samplers_")):
            raise KeyError(f"unexpected GridS state_dict key {key!r}")
        out.append(name)
        i += 1
    return out


def torch_to_flax(state_dict: Mapping[str, Any], like: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """PyTorch ``state_dict`` -> Flax variables ``{"params": {...}}`` (numpy leaves, exact values).

    ``like``: optional Flax variables (e.g. from ``module.init`` or ``jax.eval_shape``) to check the
    converted tree against; a missing or unexpected path or a shape mismatch raises ``ValueError``.
    """
    params: dict[str, Any] = {}
    for key, value in state_dict.items():
        *mods, leaf = key.split(".")
        if leaf not in ("weight", "bias", "queries") or not mods or (leaf == "queries") != (mods[-1] == "point_attn"):
            raise KeyError(f"unexpected GridS state_dict key {key!r}")
        path = _flax_module_path(mods, key)
        arr = _to_numpy(value)
        owner = path[-1]
        if leaf in ("bias", "queries"):
            name = leaf
        elif owner == "point_attn":
            raise KeyError(f"unexpected GridS state_dict key {key!r}")
        elif owner in _NORMS:
            name = "scale"
        elif owner == "camera_embed":
            name = "embedding"
        else:
            if arr.ndim != 2:
                raise ValueError(f"{key!r} should be a 2-D Linear weight, got shape {arr.shape}")
            name, arr = "kernel", np.ascontiguousarray(arr.T)
        node = params
        for p in path:
            node = node.setdefault(p, {})
        node[name] = arr
    variables = {"params": params}
    if like is not None:
        _check_like(variables, like)
    return variables


def flax_to_torch(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flax variables ``{"params": {...}}`` (or the bare params tree) -> PyTorch ``state_dict`` of numpy arrays."""
    params = variables["params"] if "params" in variables else variables
    out: dict[str, np.ndarray] = {}
    for path, value in _flatten(params):
        *mods, leaf = path
        torch_mods: list[str] = []
        for m in mods:
            if m.startswith(tuple(f"{name}_" for name in _INDEXED)):
                head, _, tail = m.partition("_")
                torch_mods += [head, tail]
            elif m in _LEAF_MODULES or m in _CONTAINERS:
                torch_mods.append(m)
            else:
                raise KeyError(f"unexpected GridS Flax param path {'/'.join(path)!r}")
        arr = np.array(value, copy=True)
        if leaf == "kernel":
            arr = np.ascontiguousarray(arr.T)
        elif leaf not in ("bias", "scale", "embedding", "queries"):
            raise KeyError(f"unexpected GridS Flax param path {'/'.join(path)!r}")
        out[".".join([*torch_mods, leaf if leaf in ("bias", "queries") else "weight"])] = arr
    return out


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    items = []
    for k, v in tree.items():
        if isinstance(v, Mapping):
            items += _flatten(v, (*prefix, k))
        else:
            items.append(((*prefix, k), v))
    return items


def _check_like(variables: Mapping[str, Any], like: Mapping[str, Any]) -> None:
    got = {"/".join(p): np.shape(v) for p, v in _flatten(variables["params"])}
    want_tree = like["params"] if "params" in like else like
    want = {"/".join(p): tuple(getattr(v, "shape", np.shape(v))) for p, v in _flatten(want_tree)}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    shapes = sorted(f"{p}: {got[p]} vs {want[p]}" for p in set(got) & set(want) if tuple(got[p]) != want[p])
    if missing or unexpected or shapes:
        raise ValueError(f"converted params do not match: missing {missing}, unexpected {unexpected}, shapes {shapes}")
