"""The ``grids-vla`` command line. Each feature module adds its own subcommands.

A module listed in ``COMMAND_MODULES`` defines ``add_commands(subparsers)``, which adds one or more
subparsers and sets ``func`` (called with the parsed namespace, returning an exit code). Heavy imports
belong inside the ``func``, so ``grids-vla --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "grids_vla.experiments.demo",
    "grids_vla.experiments.toy",
    "grids_vla.flops.cli",
    "grids_vla.envs.libero.cli",
    "grids_vla.experiments.train",
    "grids_vla.experiments.evaluate",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grids-vla", description=__doc__.splitlines()[0])
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
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
