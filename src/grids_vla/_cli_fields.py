"""One dataclass -> argparse bridge, so every command's flags mirror its config fields the same way.

Flags default to ``argparse.SUPPRESS``: a flag not given leaves the dataclass default (or a config file's value) in
place, so ``cls(**picked_fields(args, cls))`` builds the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

__all__ = ["add_dataclass_fields", "picked_fields"]


def _default(f: dataclasses.Field) -> Any:
    """The field's default, or ``dataclasses.MISSING`` for a required field."""
    if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _scalar_type(annotation: str) -> type:
    """``int`` / ``float`` / ``str`` from a (string) annotation such as ``"int | None"`` or ``"tuple[int, ...]"``."""
    inner = annotation.split("[", 1)[1] if annotation.startswith(("tuple[", "list[")) else annotation
    for name, typ in (("int", int), ("float", float)):
        if inner.startswith(name):
            return typ
    return str


def add_dataclass_fields(parser: argparse.ArgumentParser | Any, cls: type, help: dict[str, str] | None = None,
                         skip: set[str] | frozenset[str] = frozenset(),
                         choices: dict[str, tuple[Any, ...]] | None = None) -> None:
    """Add ``--field-name`` for every field of ``cls``: bools get ``--x/--no-x``, tuples and lists take several values,
    dicts take JSON, ``X | None`` fields take an ``X``, a field without a default is a required flag; ``choices``
    limits a field to the values given."""
    help = help or {}
    choices = choices or {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = _default(f)
        text = help.get(f.name, f.name.replace("_", " "))
        if default is not dataclasses.MISSING and "default" not in text:  # help may say what the default means
            text = f"{text} (default: {default!r})"
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": f.name, "help": text,
                              "required": default is dataclasses.MISSING}
        if f.name in choices:
            kw["choices"] = choices[f.name]
        flag = "--" + f.name.replace("_", "-")
        annotation = str(f.type)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, dict):
            parser.add_argument(flag, type=json.loads, **kw)
        elif isinstance(default, list | tuple) or annotation.startswith(("tuple[", "list[")):
            parser.add_argument(flag, nargs="+", type=_scalar_type(annotation), **kw)
        else:
            parser.add_argument(flag, type=_scalar_type(annotation), **kw)


def picked_fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The parsed values that are fields of ``cls`` (flags that were given)."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {k: v for k, v in vars(args).items() if k in names}
    for f in dataclasses.fields(cls):  # nargs="+" gives a list; keep the field's container type
        if f.name in out and (isinstance(_default(f), tuple) or str(f.type).startswith("tuple[")):
            out[f.name] = tuple(out[f.name])
    return out
