"""``grids-vla eval``: closed-loop LIBERO evaluation of a policy checkpoint (see :mod:`grids_vla.policy.evaluation`)."""

from __future__ import annotations

import argparse


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval``."""
    p = subparsers.add_parser(
        "eval", help="evaluate a policy checkpoint in closed loop on LIBERO",
        description="Evaluate a policy checkpoint on LIBERO: episode i of each task starts from official init state i; "
        "results (success per task with 95 % Wilson intervals, mean episode length, median policy latency at batch "
        "1) go to OUT/results.json and OUT/results.md; finished episodes are kept in OUT/episodes.jsonl, so a rerun "
        "with the same settings resumes.")
    p.add_argument("--checkpoint", required=True, help="policy folder (save_pretrained) or a training run folder")
    p.add_argument("--suite", default="libero_object", help="LIBERO suite (default: libero_object)")
    p.add_argument("--episodes-per-task", type=int, default=10, help="episodes per task (init states 0..N-1)")
    p.add_argument("--tasks", type=int, nargs="+", default=None, help="task ids (default: all of the suite)")
    p.add_argument("--perturbation", default=None,
                   help="NAME[:SEVERITY] with NAME in lighting, table_color, camera_shift (severity in [0, 1], "
                   "default 0.5), or pro:VARIANT for a LIBERO-PRO suite (lan, object, swap, task)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="step limit per episode (default: LIBERO's for the suite: spatial 220, object 280, goal 300, "
                   "10 520)")
    p.add_argument("--execute", type=int, default=None,
                   help="actions of each predicted chunk executed before re-planning (default: the whole chunk)")
    p.add_argument("--settle-steps", type=int, default=10, help="no-op steps at the start of an episode (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads during evaluation (default 1)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes playing episodes in parallel, each with its own simulator and --threads threads "
                   "(default 1; more fill the cores the single-threaded simulator leaves idle, but the reported "
                   "latency is then measured beside the other simulators)")
    p.add_argument("--out", default="outputs/eval", help="output folder (default: outputs/eval)")
    p.add_argument("--video", type=int, nargs="?", const=-1, default=0, metavar="N",
                   help="for the first N episodes of the run (bare --video: all), an MP4 of every control step with "
                   "both cameras side by side and the reducer's sampling points drawn on them, and a PNG contact "
                   "sheet, in OUT/videos/ (needs imageio and imageio-ffmpeg: the [video] extra)")
    p.add_argument("--fresh", action="store_true", help="discard episodes an earlier run left in --out")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from .evaluation import EvalConfig, evaluate

    cfg = EvalConfig(checkpoint=args.checkpoint, suite=args.suite, episodes_per_task=args.episodes_per_task,
                     tasks=args.tasks, perturbation=args.perturbation, max_steps=args.max_steps, execute=args.execute,
                     settle_steps=args.settle_steps, threads=args.threads, workers=args.workers, out=args.out,
                     video=args.video, fresh=args.fresh)
    res = evaluate(cfg)
    o, lat = res["overall"], res["latency_ms"]
    print(f"success {o['successes']}/{o['episodes']} (95 % CI {o['ci95'][0]:.2f}-{o['ci95'][1]:.2f}), mean length "
          f"{o['mean_episode_length']:.1f}, median latency {lat['median']:.2f} ms; results in {cfg.out}")
    return 0
