"""``grids-vla data libero``: generate LIBERO demonstrations with the scripted expert (see ``data.generate``).

``grids-vla data export-lerobot``: write them as a local LeRobotDataset (see ``export_lerobot``)."""

from __future__ import annotations

import argparse
import os


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` with a nested ``libero`` subcommand."""
    data = subparsers.add_parser("data", help="generate training data")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SOURCE")
    p = sub.add_parser("libero", help="scripted-expert LIBERO demos in the official HDF5 layout (resumable)")
    p.add_argument(
        "--suite", required=True, help="libero_object, libero_spatial, libero_goal, libero_10 (+ PRO variants)"
    )
    p.add_argument("--demos-per-task", type=int, required=True)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--out", required=True, help="output folder; re-running resumes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", type=int, nargs="*", default=None, help="task ids (default: all)")
    p.add_argument("--max-attempts", type=int, default=None, help="rollouts per task at most (default 3N+5)")
    p.add_argument("--max-steps", type=int, default=None, help="episode horizon (default: LIBERO's per suite)")
    p.add_argument("--msaa", action="store_true", help="render with 4x MSAA (default off, ~1.5x faster)")
    p.add_argument("--workers", type=int, default=1, help="processes, one task each at a time (default 1)")
    p.set_defaults(func=_run_libero)

    e = sub.add_parser(
        "export-lerobot",
        help="export generated LIBERO demos to a local LeRobotDataset (images; needs lerobot: run in .venv-lerobot)",
    )
    e.add_argument("--data", required=True, nargs="+", help="*_demo.hdf5 files or folders of them")
    e.add_argument("--out", required=True, help="dataset root to create")
    e.add_argument("--repo-id", default="local/libero_grids", help="dataset id in its metadata (nothing is uploaded)")
    e.add_argument("--fps", type=int, default=20)
    e.add_argument("--max-tasks", type=int, default=None, help="first N task files only")
    e.add_argument("--max-demos-per-task", type=int, default=None)
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    e.set_defaults(func=_run_export_lerobot)


def _run_libero(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from .data import generate

    summary = generate(
        suite=args.suite,
        demos_per_task=args.demos_per_task,
        out=args.out,
        image_size=args.image_size,
        seed=args.seed,
        tasks=args.tasks,
        max_attempts=args.max_attempts,
        max_steps=args.max_steps,
        msaa=args.msaa,
        workers=args.workers,
    )
    for name, st in summary["tasks"].items():
        print(f"{st['task_id']:2d} {st['demos']:4d} demos {st['attempts']:4d} attempts {st['seconds']:8.1f}s  {name}")
    short = [n for n, st in summary["tasks"].items() if st["demos"] < args.demos_per_task]
    return 1 if short else 0


def _run_export_lerobot(args: argparse.Namespace) -> int:
    from .export_lerobot import export_lerobot

    summary = export_lerobot(
        args.data,
        args.out,
        repo_id=args.repo_id,
        fps=args.fps,
        max_tasks=args.max_tasks,
        max_demos_per_task=args.max_demos_per_task,
        overwrite=args.overwrite,
    )
    for name, st in summary["tasks"].items():
        print(f"{st['demos']:4d} demos {st['frames']:6d} frames  {name}")
    print(f"{summary['episodes']} episodes, {summary['frames']} frames -> {summary['root']}")
    return 0
