"""A name -> class registry so configs and CLIs can pick a reducer by string."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .base import TokenReducer

__all__ = ["register_reducer", "create_reducer", "list_reducers", "get_reducer_class"]

_REGISTRY: dict[str, type[TokenReducer]] = {}
T = TypeVar("T", bound=type[TokenReducer])


def register_reducer(name: str) -> Callable[[T], T]:
    """Class decorator: make ``create_reducer(name, ...)`` build this class."""

    def wrap(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"reducer name {name!r} is already registered to {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def get_reducer_class(name: str) -> type[TokenReducer]:
    _ensure_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown reducer {name!r}; available: {', '.join(list_reducers())}") from None


def create_reducer(name: str, dim: int, k: int, **kwargs: Any) -> TokenReducer:
    """Build a registered reducer, e.g. ``create_reducer("tokenlearner", dim=768, k=8)``."""
    return get_reducer_class(name)(dim, k, **kwargs)


def list_reducers() -> list[str]:
    _ensure_builtins()
    return sorted(_REGISTRY)


def _ensure_builtins() -> None:
    # Importing the package registers every built-in reducer.
    import grids_vla  # noqa: F401
