"""The ``grids-vla`` command line. Each feature module adds its own subcommands.

A module listed in ``COMMAND_MODULES`` defines ``add_commands(subparsers)``, which adds one or more
subparsers and sets ``func`` (called with the parsed namespace, returning an exit code). Heavy imports
belong inside the ``func``, so ``grids-vla --help`` stays fast.

Errors a user can cause (a missing or unreadable file, a bad value, a missing optional package) surface from the
library as ``ValueError``, ``OSError``, ``KeyError``, ``IndexError`` or ``ImportError`` with a message that names the
file or setting; :func:`main` prints that message as one line on stderr and returns 2. ``--debug`` (or the
environment variable ``GRIDS_DEBUG=1``) lets the exception through with its traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = [
    "grids_vla.experiments.demo",
    "grids_vla.experiments.toy",
    "grids_vla.flops.cli",
    "grids_vla.envs.libero.cli",
    "grids_vla.experiments.train",
    "grids_vla.experiments.evaluate",
]
# What the library raises for bad input; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, KeyError, IndexError, ImportError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grids-vla", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line (also: GRIDS_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    reducers = sub.add_parser("reducers", help="list the registered token reducers")
    reducers.set_defaults(func=_list_reducers)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def _list_reducers(args: argparse.Namespace) -> int:
    from .reducers import get_reducer_class, list_reducers

    for name in list_reducers():
        doc = (get_reducer_class(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:14s} {doc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if args.debug or os.environ.get("GRIDS_DEBUG") == "1":
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e  # str(KeyError) quotes its message
        print(f"grids-vla {args.command}: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
