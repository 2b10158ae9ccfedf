"""Closed-loop evaluation of a compact VLA checkpoint on LIBERO (``grids-vla eval``).

Protocol: episode ``i`` of a task starts from the task's official init state ``i``; a few no-op steps (gripper open)
let the scene settle, then the policy runs until the task succeeds or the suite's standard step limit is reached.
Each policy call predicts an action chunk, of which the first ``execute`` actions are run before re-planning.
Observations go to the policy exactly as the demo reader hands them to training: upright uint8 ``(3, S, S)`` images
rendered at the policy's ``image_size`` (MSAA off, as in data generation) and the state ``ee_pos + ee_ori (axis-angle,
the data writer's conversion) + gripper_states``; the policy itself normalises both.

Every finished episode is appended to ``episodes.jsonl`` in the output folder, so a killed run resumes where it
stopped; ``results.json`` and ``results.md`` are rewritten (atomically) after every episode. ``workers=N`` plays
episodes in N processes (one simulator each, ``threads`` torch threads each); the outcome of an episode does not
depend on which process plays it, but the policy latency is then measured beside the other simulators.
``video=N`` records the first ``N`` episodes of the run (tasks in the given order, then episodes) as an MP4 of every
control step, both cameras side by side with the reducer's sampling points drawn on them, plus a PNG contact sheet
(needs ``imageio`` and ``imageio-ffmpeg``: the ``[video]`` extra).

``grids-vla eval --env so101`` evaluates on the simulated SO-101 arm instead (:mod:`.evaluate_so101`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._cli_fields import add_dataclass_fields, picked_fields
from .._io import atomic_write_text, file_sha256
from ..envs.libero.suites import step_limit
from ..policy.checkpoint import WEIGHTS_NAME, resolve_checkpoint
from ..policy.configuration_grids_vla import check_counts
from ..policy.modeling_grids_vla import GridSVLAPolicy
from .evaluate_so101 import HELP as SO101_HELP
from .evaluate_so101 import SO101_ONLY, SO101EvalConfig, run_so101_eval
from .report import EPISODES_NAME, RUN_NAME, append_episode, check_video, load_episodes, write_results
from .rollout import EpisodeRunner, check_blind, parse_perturbation, task_instruction, worker_init, worker_play

__all__ = ["ENVS", "EvalConfig", "evaluate", "add_commands"]

#: The simulators ``grids-vla eval --env`` evaluates in (LIBERO, the default; SO-101: see ``evaluate_so101``).
ENVS = ("libero", "so101")


@dataclass
class EvalConfig:
    """Options of one evaluation run; field names double as ``grids-vla eval`` flags."""

    checkpoint: str = ""
    suite: str = "libero_object"
    episodes_per_task: int = 10
    tasks: tuple[int, ...] | None = None
    perturbation: str | None = None
    max_steps: int | None = None
    execute: int | None = None
    settle_steps: int = 10
    threads: int = 1
    workers: int = 1
    out: str = "outputs/eval"
    video: int = 0
    fresh: bool = False
    video_frames: int = 4
    blind: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ValueError("--checkpoint is required")
        if isinstance(self.video, bool):  # the field used to be a switch: True still means every episode
            self.video = -1 if self.video else 0
        check_video(self.video)
        check_counts(self, ("episodes_per_task", "threads", "workers", "video_frames"))
        check_counts(self, ("settle_steps",), least=0)
        check_counts(self, ("max_steps", "execute"), optional=True)
        if self.tasks is not None:
            self.tasks = tuple(int(t) for t in self.tasks)
            if not self.tasks or len(set(self.tasks)) != len(self.tasks):
                raise ValueError(f"tasks must be a non-empty list of unique ids, got {list(self.tasks)}")


def evaluate(cfg: EvalConfig, log: Any = None) -> dict[str, Any]:
    """Run (or resume) an evaluation; returns the results dict also written to ``<out>/results.json``."""
    from ..envs.libero.factory import get_suite

    log = sys.stderr if log is None else log
    ckpt = resolve_checkpoint(cfg.checkpoint)
    # Loaded before the simulator starts (and logs), so a bad checkpoint or spec fails first, with its own error; the
    # episode workers load their own copies.
    policy = GridSVLAPolicy.from_pretrained(ckpt).eval()
    mcfg = policy.config
    try:
        suite, scene = parse_perturbation(cfg.perturbation, cfg.suite)
    except ValueError as e:
        raise ValueError(f"--perturbation {cfg.perturbation}: {e}") from None
    bench = get_suite(suite)
    n_tasks = bench.get_num_tasks()
    tasks = list(cfg.tasks) if cfg.tasks is not None else list(range(n_tasks))
    bad = [t for t in tasks if not 0 <= t < n_tasks]
    if bad:
        raise IndexError(f"task ids {bad} out of range for {suite}: 0..{n_tasks - 1}")
    instructions = {str(t): task_instruction(bench, t) for t in tasks}
    if mcfg.language == "learned":
        unknown = sorted({s for s in instructions.values() if s not in mcfg.instructions})
        if unknown:
            raise ValueError(f"the policy was trained without the instructions {unknown[:3]} (learned language "
                             f"knows only config.instructions); evaluate on the tasks it was trained on")
    for t in tasks:
        n_init = len(bench.get_task_init_states(t))
        if cfg.episodes_per_task > n_init:
            raise ValueError(f"episodes_per_task={cfg.episodes_per_task} exceeds the {n_init} official init states "
                             f"of {suite} task {t}")
    check_blind(cfg.blind, mcfg.cameras)
    max_steps = cfg.max_steps or step_limit(suite)
    execute = min(cfg.execute or mcfg.chunk, mcfg.chunk)
    run = {"checkpoint": str(ckpt), "weights_sha256": file_sha256(ckpt / WEIGHTS_NAME), "suite": suite,
           "perturbation": cfg.perturbation, "tasks": tasks, "instructions": instructions,
           "episodes_per_task": cfg.episodes_per_task, "max_steps": max_steps, "execute": execute,
           "chunk": mcfg.chunk, "settle_steps": cfg.settle_steps, "threads": cfg.threads, "image_size": mcfg.image_size,
           "reducer": mcfg.reducer, "k": mcfg.k, "cameras": list(mcfg.cameras), "msaa": False,
           "workers": cfg.workers}
    if cfg.blind:  # only when set, so evaluations from before the option still resume
        run["blind"] = list(cfg.blind)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ep_path = out / EPISODES_NAME
    run_path = out / RUN_NAME
    episodes: list[dict[str, Any]] = []
    if not cfg.fresh and ep_path.is_file() and run_path.is_file():
        old = json.loads(run_path.read_text())
        same = {k: v for k, v in run.items() if k not in ("tasks", "instructions", "episodes_per_task", "workers")}
        changed = {k: (old.get(k), v) for k, v in same.items() if old.get(k) != v}
        if changed:
            raise ValueError(f"{out} holds an evaluation with other settings {changed} (earlier vs now); use another "
                             f"--out or --fresh")
        episodes = [e for e in load_episodes(ep_path) if e["task_id"] in tasks
                    and e["episode"] < cfg.episodes_per_task]
    else:
        ep_path.unlink(missing_ok=True)
    atomic_write_text(run_path, json.dumps(run, indent=2))
    atomic_write_text(ep_path, "".join(json.dumps(e) + "\n" for e in episodes))
    done = {(e["task_id"], e["episode"]) for e in episodes}
    n_video = len(tasks) * cfg.episodes_per_task if cfg.video == -1 else cfg.video

    jobs = [(t, i, tasks.index(t) * cfg.episodes_per_task + i < n_video)  # video: the run's first N episodes
            for t in tasks for i in range(cfg.episodes_per_task) if (t, i) not in done]
    # `suite` already names a PRO / Plus variant; only a scene perturbation is left for the episode runner to apply.
    setup = EpisodeRunner.Setup(str(ckpt), suite, cfg.perturbation if scene else None, instructions, max_steps,
                                 execute, cfg.settle_steps, str(out), cfg.video_frames, tuple(cfg.blind))
    t_start = time.perf_counter()

    def finished(rec: dict[str, Any]) -> None:
        append_episode(ep_path, rec)
        episodes.append(rec)
        o = write_results(out, run, episodes)["overall"]
        print(f"[{suite} task {rec['task_id']} ep {rec['episode']}] {'success' if rec['success'] else 'fail'} in "
              f"{rec['steps']} steps | overall {o['successes']}/{o['episodes']} | "
              f"{time.perf_counter() - t_start:.0f} s", file=log, flush=True)

    cpus = os.cpu_count() or 1
    if cfg.workers > 1 and cfg.workers * cfg.threads > cpus:
        print(f"warning: {cfg.workers} workers x {cfg.threads} torch threads > {cpus} CPUs: the policy's threads "
              f"compete with the simulators (slower episodes, inflated latency); --threads "
              f"{max(1, cpus // cfg.workers)} fits", file=log, flush=True)
    if cfg.workers == 1 or len(jobs) < 2:
        old_threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        runner = EpisodeRunner(setup, policy)
        try:
            for job in jobs:
                finished(runner.play(*job))
        finally:
            runner.close()
            torch.set_num_threads(old_threads)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                 initializer=worker_init, initargs=(setup, cfg.threads)) as pool:
            futures = [pool.submit(worker_play, *job) for job in jobs]  # FIFO: workers take them in task order
            try:
                for fut in as_completed(futures):
                    finished(fut.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # stop handing out episodes; let running ones end
                raise
    return write_results(out, run, episodes)



# ---------------------------------------------------------------------------------------------------- the command

_HELP = {
    "checkpoint": "policy folder (save_pretrained) or a training run folder",
    "suite": "LIBERO suite",
    "episodes_per_task": "episodes per task (init states 0..N-1)",
    "tasks": "task ids (default: all of the suite)",
    "perturbation": "NAME[:SEVERITY] with NAME in lighting, table_color, camera_shift (severity in [0, 1], default "
                    "0.5), or pro:VARIANT for a LIBERO-PRO suite (lan, object, swap, task)",
    "max_steps": "step limit per episode (default: LIBERO's for the suite: spatial 220, object 280, goal 300, 10 520)",
    "execute": "actions of each predicted chunk executed before re-planning (default: the whole chunk)",
    "settle_steps": "no-op steps at the start of an episode",
    "threads": "torch CPU threads during evaluation",
    "workers": "processes playing episodes in parallel, each with its own simulator and --threads threads (more fill "
               "the cores the single-threaded simulator leaves idle, but the reported latency is then measured beside "
               "the other simulators)",
    "out": "output folder",
    "video": "for the first N episodes of the run (bare --video: all), an MP4 of every control step with both cameras "
             "side by side and the reducer's sampling points drawn on them, and a PNG contact sheet, in OUT/videos/ "
             "(needs imageio and imageio-ffmpeg: the [video] extra)",
    "fresh": "discard episodes an earlier run left in --out",
    "video_frames": "policy calls shown in each contact sheet",
    "blind": "cameras (the policy's names, e.g. agentview eye_in_hand) shown to the policy as a uniform grey image: "
             "how much success remains without them says how much the policy uses them",
}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval``: flags mirror :class:`EvalConfig` (``--checkpoint`` is required, a bare ``--video`` means all)."""
    p = subparsers.add_parser(
        "eval", help="evaluate a policy checkpoint in closed loop on LIBERO (or --env so101)",
        description="Evaluate a policy checkpoint on LIBERO: episode i of each task starts from official init state i; "
        "results (success per task with 95 % Wilson intervals, mean episode length, median policy latency at batch "
        "1) go to OUT/results.json and OUT/results.md; finished episodes are kept in OUT/episodes.jsonl, so a rerun "
        "with the same settings resumes. --env so101 evaluates on the simulated SO-101 arm instead: --episodes seeded "
        "in-distribution scenes or the 21 OOD scenes (--scenes in|ood) of --task, in the same files (docs/so101.md).")
    p.add_argument("--checkpoint", required=True, help=_HELP["checkpoint"])
    p.add_argument("--env", default="libero", help="simulator: libero (default) or so101 (the simulated SO-101 arm, "
                   "see docs/so101.md: takes --task, --scenes, --episodes instead of the LIBERO flags)")
    add_dataclass_fields(p, EvalConfig, help=_HELP, skip={"checkpoint", "video"})
    so101_fields = {f.name for f in dataclasses.fields(SO101EvalConfig)}
    add_dataclass_fields(p, SO101EvalConfig, help=SO101_HELP, skip=so101_fields - set(SO101_ONLY))
    p.add_argument("--video", type=int, nargs="?", const=-1, default=argparse.SUPPRESS, metavar="N",
                   help=f"{_HELP['video']} (default: 0)")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    if args.env not in ENVS:
        raise ValueError(f"--env: found {args.env!r}, expected one of {', '.join(ENVS)}")
    if args.env == "so101":
        return run_so101_eval(args, tuple(f.name for f in dataclasses.fields(EvalConfig)))
    foreign = [f"--{n}" for n in SO101_ONLY if n in vars(args)]
    if foreign:
        raise ValueError(f"{', '.join(foreign)}: SO-101 flags (with --env so101); LIBERO takes --suite, --tasks, "
                         f"--episodes-per-task")
    cfg = EvalConfig(**picked_fields(args, EvalConfig))
    res = evaluate(cfg)
    o, lat = res["overall"], res["latency_ms"]
    print(f"success {o['successes']}/{o['episodes']} (95 % CI {o['ci95'][0]:.2f}-{o['ci95'][1]:.2f}), mean length "
          f"{o['mean_episode_length']:.1f}, median latency {lat['median']:.2f} ms; results in {cfg.out}")
    return 0
