"""``grids-vla data libero``: generate LIBERO demonstrations with the scripted expert (see ``generate``).

``grids-vla data export-lerobot``: write them as a local LeRobotDataset (see ``export_lerobot``).

Flags mirror the fields of :class:`~.generate.GenerateConfig` and :class:`~.export_lerobot.ExportConfig`."""

from __future__ import annotations

import argparse

from ..._cli_fields import add_dataclass_fields, picked_fields
from ..so101.cli import add_data_command as add_so101_data_command
from .export_lerobot import ExportConfig, export_lerobot
from .generate import GenerateConfig, generate

_HELP = {
    "suite": "libero_object, libero_spatial, libero_goal, libero_10 (+ PRO variants)",
    "demos_per_task": "successful demos to make per task",
    "out": "output folder; re-running resumes",
    "image_size": "camera image side in px",
    "seed": "base seed; attempt j of task t always uses the same seed derived from it",
    "tasks": "task ids (default: all)",
    "max_attempts": "rollouts per task at most (default 3N+5)",
    "max_steps": "episode horizon (default: LIBERO's per suite)",
    "msaa": "render with 4x MSAA (~1.5x slower)",
    "workers": "processes, one task each at a time",
}
_EXPORT_HELP = {
    "data": "*_demo.hdf5 files or folders of them",
    "out": "dataset root to create",
    "repo_id": "dataset id in its metadata (nothing is uploaded)",
    "fps": "frame rate recorded in the metadata",
    "max_tasks": "first N task files only",
    "max_demos_per_task": "first N demos of each task file only",
    "overwrite": "replace an existing --out",
}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` with nested ``libero`` and ``export-lerobot`` subcommands."""
    data = subparsers.add_parser("data", help="generate training data")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SOURCE")
    p = sub.add_parser("libero", help="scripted-expert LIBERO demos in the official HDF5 layout (resumable)")
    add_dataclass_fields(p, GenerateConfig, help=_HELP)
    p.set_defaults(func=_run_libero)
    add_so101_data_command(sub)  # grids-vla data so101

    e = sub.add_parser(
        "export-lerobot",
        help="export generated LIBERO demos to a local LeRobotDataset (images; needs lerobot: run in .venv-lerobot)",
    )
    e.add_argument("--data", required=True, nargs="+", help=_EXPORT_HELP["data"])
    e.add_argument("--out", required=True, help=_EXPORT_HELP["out"])
    add_dataclass_fields(e, ExportConfig, help=_EXPORT_HELP, skip={"data", "out", "robot_type"})
    e.set_defaults(func=_run_export_lerobot)


def _run_libero(args: argparse.Namespace) -> int:
    summary = generate(**picked_fields(args, GenerateConfig))
    for name, st in summary["tasks"].items():
        print(f"{st['task_id']:2d} {st['demos']:4d} demos {st['attempts']:4d} attempts {st['seconds']:8.1f}s  {name}")
    short = [n for n, st in summary["tasks"].items() if st["demos"] < args.demos_per_task]
    return 1 if short else 0


def _run_export_lerobot(args: argparse.Namespace) -> int:
    values = picked_fields(args, ExportConfig)
    summary = export_lerobot(values.pop("data"), values.pop("out"), **values)
    for name, st in summary["files"].items():
        print(f"{st['demos']:4d} demos {st['frames']:6d} frames  {name}")
    print(f"{summary['episodes']} episodes, {summary['frames']} frames -> {summary['root']}")
    return 0
