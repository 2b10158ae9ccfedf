"""Generate LIBERO demonstrations with the scripted expert (``grids-vla data libero``).

Two passes per episode: the expert runs physics-only from a fresh random layout (no rendering, ~3-5 s), and only a
successful rollout is replayed state by state through a rendering env to make the camera images (replayed images match
online ones). Output follows the official LIBERO HDF5 layout, one file per task
(``<out>/<suite>/<task>_demo.hdf5``: ``data/demo_i/{actions, states, rewards, dones, robot_states}`` and
``data/demo_i/obs/{agentview_rgb, eye_in_hand_rgb, ee_pos, ee_ori, ee_states, gripper_states, joint_states}``; the
instruction in ``data.attrs["problem_info"]``), so LIBERO tooling reads it. Images are stored as rendered (upside
down, like the official files); the reader (:mod:`grids_vla.envs.libero.dataset`) returns them upright.

Resumable and deterministic: attempt ``j`` of task ``t`` always uses the same seed, each successful episode is written
atomically to its own shard, and the task file is assembled (atomically) once all its shards exist, so a killed run
loses at most the episode in flight and a re-run produces the same files.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..._io import atomic_path, atomic_write_text
from .expert import rollout, unsupported_goals
from .factory import make_env, num_tasks
from .suites import CAMERA_KEYS, step_limit, write_demo

__all__ = ["Episode", "GenerateConfig", "attempt_seed", "generate", "physics_env", "render_states", "write_summary"]


def attempt_seed(seed: int, suite: str, task_id: int, attempt: int) -> int:
    """A 32-bit seed for one attempt, stable across runs and Python versions."""
    digest = hashlib.sha256(f"{seed}/{suite}/{task_id}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class Episode:
    """Everything stored for one demonstration."""

    states: np.ndarray
    actions: np.ndarray
    obs: dict[str, np.ndarray]
    attempt: int
    seed: int


def render_states(render_env: Any, states: np.ndarray) -> dict[str, np.ndarray]:
    """Second pass: load each saved state and record the cameras (as rendered) and proprioception."""
    frames: dict[str, list[np.ndarray]] = {k: [] for k in CAMERA_KEYS.values()}
    proprio: dict[str, list[np.ndarray]] = {"ee_pos": [], "ee_quat": [], "gripper_states": [], "joint_states": []}
    for s in states:
        o = render_env.set_state(s)
        for cam, key in CAMERA_KEYS.items():
            if cam in o:
                frames[key].append(o[cam][::-1, ::-1])  # back to LIBERO's stored orientation
        for k in proprio:
            proprio[k].append(o[k])
    out = {k: np.asarray(v, dtype=np.uint8) for k, v in frames.items() if v}
    out.update({k: np.asarray(v, dtype=np.float64) for k, v in proprio.items()})
    return out


def _write_shard(path: Path, ep: Episode) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["attempt"] = ep.attempt
        f.attrs["seed"] = ep.seed
        f.create_dataset("states", data=ep.states)
        f.create_dataset("actions", data=ep.actions)
        g = f.create_group("obs")
        for k, v in ep.obs.items():
            g.create_dataset(k, data=v)


def _assemble(task_file: Path, shards: list[Path], info: dict[str, Any]) -> None:
    """Write the task's LIBERO-layout file from its episode shards (atomically)."""
    total = 0
    with atomic_path(task_file) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        for i, shard in enumerate(shards):
            with h5py.File(shard, "r") as s:
                images = {key: s["obs"][key][()] for key in CAMERA_KEYS.values() if key in s["obs"]}
                total += write_demo(data.create_group(f"demo_{i}"), s, images)
        data.attrs["problem_info"] = json.dumps(
            {"problem_name": info["problem_name"], "language_instruction": info["instruction"]}
        )
        data.attrs["language_instruction"] = info["instruction"]
        data.attrs["bddl_file_name"] = info["bddl_file"]
        data.attrs["env_args"] = json.dumps(info["env_args"])
        data.attrs["num_demos"] = len(shards)
        data.attrs["total"] = total
        data.attrs["image_orientation"] = "as rendered (upside down, as in official LIBERO files)"
        data.attrs["generator"] = "grids_vla scripted expert (privileged state), fresh random resets"


def _done_shards(task_dir: Path) -> list[Path]:
    return sorted(task_dir.glob("demo_*.hdf5"))


@dataclass
class GenerateConfig:
    """What :func:`generate` makes (the fields of ``grids-vla data libero``)."""

    suite: str
    demos_per_task: int
    out: str
    image_size: int = 128
    seed: int = 0
    tasks: tuple[int, ...] | None = None
    max_attempts: int | None = None
    max_steps: int | None = None
    msaa: bool = False
    workers: int = 1

    def __post_init__(self) -> None:
        self.out = os.fspath(self.out)
        if self.demos_per_task < 1:
            raise ValueError("demos_per_task must be >= 1")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a positive int, got {self.workers!r}")
        if self.tasks is not None:
            self.tasks = tuple(int(t) for t in self.tasks)
            if len(set(self.tasks)) != len(self.tasks):
                raise ValueError(f"task ids must be unique, got {list(self.tasks)}")


def generate(suite: str, demos_per_task: int, out: str | os.PathLike[str], *, log: Any = sys.stderr,
             **options: Any) -> dict[str, Any]:
    """Generate ``demos_per_task`` successful expert demos for each task of ``suite`` into ``out``; returns counts.

    ``options`` are the other :class:`GenerateConfig` fields. Resumes from whatever ``out`` already holds.
    ``max_attempts`` bounds rollouts per task (default 3x demos + 5), so a task the expert cannot solve ends with fewer
    demos instead of looping forever. ``max_steps`` defaults to the suite's standard step limit
    (:func:`~.suites.step_limit`). ``workers > 1`` spreads the tasks over that many processes (one task per process
    at a time); the files are the same as with one worker.
    """
    cfg = GenerateConfig(suite, demos_per_task, out, **options)
    n = num_tasks(suite)
    task_ids = list(range(n)) if cfg.tasks is None else list(cfg.tasks)
    for t in task_ids:
        if not 0 <= t < n:
            raise IndexError(f"task id {t} out of range for {suite}: 0..{n - 1}")
    kwargs = {"suite": suite, "demos_per_task": demos_per_task, "out": cfg.out, "image_size": cfg.image_size,
              "seed": cfg.seed, "max_attempts": cfg.max_attempts, "max_steps": cfg.max_steps or step_limit(suite),
              "msaa": cfg.msaa}
    started = time.time()
    if cfg.workers == 1 or len(task_ids) == 1:
        summary = _generate_tasks(task_ids=task_ids, log=log, **kwargs)
    else:
        # spawn, not fork: a forked child would inherit the parent's MuJoCo / EGL state
        with ProcessPoolExecutor(min(cfg.workers, len(task_ids)), mp_context=mp.get_context("spawn")) as pool:
            jobs = [dict(kwargs, task_ids=[t]) for t in task_ids]
            parts = list(pool.map(_generate_one_task, jobs, [os.getpid()] * len(jobs)))
        summary = {"suite": suite, "tasks": {}, "seed": cfg.seed, "image_size": cfg.image_size,
                   "new_demos": sum(p["new_demos"] for p in parts)}
        for p in parts:
            summary["tasks"].update(p["tasks"])
    summary["seconds"] = round(time.time() - started, 1)
    summary["workers"] = cfg.workers
    return write_summary(Path(out) / suite, summary)


def write_summary(root: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Write ``root/summary.json`` atomically, keeping the entries of tasks this run did not touch when the file on
    disk is from the same seed and image size (runs over different task subsets then add up instead of overwriting
    each other); returns what was written."""
    path = root / "summary.json"
    if path.exists():
        old = json.loads(path.read_text())
        if (old.get("seed"), old.get("image_size")) == (summary["seed"], summary["image_size"]):
            kept = old.get("tasks", {})
            new = {k: v for k, v in summary["tasks"].items() if not (v.get("resumed") and k in kept)}
            summary = dict(summary, tasks={**kept, **new})  # a task found complete keeps the stats of its run
    atomic_write_text(path, json.dumps(summary, indent=2))
    return summary


def _shard_attempt(shard: Path) -> int:
    """The rollout attempt a finished demo shard came from."""
    with h5py.File(shard, "r") as f:
        return int(f.attrs["attempt"])


def physics_env(suite: str, task_id: int) -> Any:
    """The physics-only env whose fresh random resets start the training rollouts.

    ``hard_reset=True``: with the compiled model kept between resets, LIBERO places objects that start on a fixture's
    region (libero_spatial's bowl on the stove, in the cabinet's top drawer) offset by the fixture's position a second
    time, off the table; rebuilding per reset places them right and gives bit-identical layouts elsewhere.
    """
    return make_env(suite, task_id, render=False, hard_reset=True)


def _generate_one_task(kwargs: dict[str, Any], parent_pid: int | None = None) -> dict[str, Any]:
    """Worker-process entry point (module level so ``spawn`` can import it); logs to the worker's stderr and stops
    before its next attempt once ``parent_pid`` is no longer its parent (the parent was killed)."""
    return _generate_tasks(log=sys.stderr, parent_pid=parent_pid, **kwargs)


def _generate_tasks(
    suite: str,
    demos_per_task: int,
    out: str,
    image_size: int,
    seed: int,
    task_ids: list[int],
    max_attempts: int | None,
    max_steps: int | None,
    msaa: bool,
    log: Any,
    parent_pid: int | None = None,
) -> dict[str, Any]:
    """The sequential generator behind :func:`generate` (checked arguments; writes no summary file)."""
    max_attempts = max_attempts or 3 * demos_per_task + 5
    horizon = max_steps or step_limit(suite)
    root = Path(out) / suite
    summary: dict[str, Any] = {"suite": suite, "tasks": {}, "seed": seed, "image_size": image_size}
    started = time.time()
    made = 0
    todo = len(task_ids) * demos_per_task
    for ti, t in enumerate(task_ids):
        phys = physics_env(suite, t)
        name = phys.task_name
        task_file = root / f"{name}_demo.hdf5"
        task_dir = root / ".shards" / name
        stats = {"task_id": t, "instruction": phys.instruction, "demos": 0, "attempts": 0, "seconds": 0.0}
        summary["tasks"][name] = stats
        if unsupported_goals(phys):
            stats["skipped"] = f"unsupported goals {unsupported_goals(phys)}"
            print(f"[{suite} task {t}] skipped: {stats['skipped']}", file=log, flush=True)
            phys.close()
            todo -= demos_per_task
            continue
        shards = _done_shards(task_dir)
        if task_file.exists() and len(shards) >= demos_per_task:
            with h5py.File(task_file, "r") as f:
                if int(f["data"].attrs["num_demos"]) == demos_per_task:
                    stats["demos"] = demos_per_task
                    stats["resumed"] = True
                    stats["attempts"] = 1 + max(_shard_attempt(s) for s in shards[:demos_per_task])
                    todo -= demos_per_task
                    phys.close()
                    continue
        next_attempt = max((_shard_attempt(s) + 1 for s in shards), default=0)
        shards = shards[:demos_per_task]
        todo -= len(shards)
        rend = None
        t0 = time.time()
        attempt = next_attempt
        while len(shards) < demos_per_task and attempt < max_attempts:
            if parent_pid is not None and os.getppid() != parent_pid:
                raise SystemExit(f"{suite} task {t}: the parent process is gone; stopping (finished demos are kept)")
            s_seed = attempt_seed(seed, suite, t, attempt)
            phys.seed(s_seed)
            phys.reset()
            r = rollout(phys, horizon)
            stats["attempts"] += 1
            if r.success:
                if rend is None:
                    rend = make_env(suite, t, image_size=image_size, msaa=msaa)
                    rend.reset()  # a reset hides robosuite's gripper-site markers, which would show in the images
                obs = render_states(rend, r.states)
                shard = task_dir / f"demo_{attempt:05d}.hdf5"
                _write_shard(shard, Episode(r.states, r.actions, obs, attempt, s_seed))
                shards.append(shard)
                made += 1
            attempt += 1
            el = time.time() - started
            rate = el / max(made, 1)
            eta = rate * max(todo - made, 0)
            print(
                f"[{suite} task {t} ({ti + 1}/{len(task_ids)})] attempt {attempt - 1}: "
                f"{'ok' if r.success else 'fail'} {r.steps} steps | {len(shards)}/{demos_per_task} demos | "
                f"{rate:.1f} s/demo | ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}",
                file=log,
                flush=True,
            )
        stats["demos"] = len(shards)
        stats["seconds"] = round(time.time() - t0, 1)
        info = {
            "problem_name": phys.env.parsed_problem["problem_name"],
            "instruction": phys.instruction,
            "bddl_file": f"{suite}/{name}.bddl",
            "env_args": {"suite": suite, "task_id": t, "image_size": image_size, "msaa": msaa, "seed": seed},
        }
        if shards:
            _assemble(task_file, shards, info)
        phys.close()
        if rend is not None:
            rend.close()
    summary["new_demos"] = made
    return summary
