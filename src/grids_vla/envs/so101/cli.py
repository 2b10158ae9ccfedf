"""``grids-vla data so101``: SO-101 demonstrations from the scripted expert (see ``generate``).

Added under ``grids-vla data`` by the LIBERO data command (``envs/libero/cli.py``). Flags mirror the fields of
:class:`~.generate.GenerateConfig`; MuJoCo is imported only when the command runs."""

from __future__ import annotations

import argparse

from ..._cli_fields import add_dataclass_fields, picked_fields
from .generate import GenerateConfig, generate
from .scene import TASKS

__all__ = ["add_data_command"]

_HELP = {
    "task": f"{' or '.join(TASKS)}",
    "episodes": "successful demos to make",
    "out": "output folder (files under OUT/TASK); re-running resumes",
    "image_size": "camera image side in px (front and wrist cameras)",
    "seed": "base seed; attempt j always plays the scene of the same seed derived from it",
    "max_attempts": "rollouts at most (default 2N+10)",
    "max_steps": "episode horizon (default: the task's, 160)",
    "action_noise": "std of Gaussian noise on the executed [dx, dy, dz] while the expert's own command is recorded "
                    "(demos with recoveries, as in DART; 0: none)",
}


def add_data_command(sub: argparse._SubParsersAction) -> None:
    """Add ``so101`` to the ``grids-vla data`` subcommands."""
    p = sub.add_parser("so101", help="scripted-expert demos of the simulated SO-101 arm (bowl, stack) in the LIBERO "
                                     "HDF5 layout (resumable; needs the so101 extra)")
    add_dataclass_fields(p, GenerateConfig, help=_HELP)
    p.set_defaults(func=_run_so101)


def _run_so101(args: argparse.Namespace) -> int:
    values = picked_fields(args, GenerateConfig)
    summary = generate(values.pop("task"), values.pop("episodes"), values.pop("out"), **values)
    for instruction, n in summary["instructions"].items():
        print(f"{n:4d} demos  {instruction}")
    print(f"{summary['demos']} demos ({summary['new_demos']} new) in {summary['seconds']} s -> "
          f"{args.out}/{summary['task']}")
    return 0 if summary["demos"] >= args.episodes else 1
