"""Generate SO-101 demonstrations with the scripted expert (``grids-vla data so101``).

The files have the layout ``grids-vla data libero`` writes (and ``grids-vla train`` reads, through
:class:`~grids_vla.envs.libero.dataset.LiberoDemoDataset`): ``data/demo_i/{actions, states, rewards, dones,
robot_states}`` and ``data/demo_i/obs/{agentview_rgb, eye_in_hand_rgb, ee_pos, ee_ori, ee_states, gripper_states,
joint_states}``, the instruction in ``data.attrs["problem_info"]``. ``agentview_rgb`` is the ``front`` camera and
``eye_in_hand_rgb`` the ``wrist`` camera, stored turned by 180 degrees like LIBERO's files (the reader returns them
upright). Actions are the env's 4-D ``[dx, dy, dz, grasp]`` (train with ``--action-dim 4``); the state the policy
reads is ``ee_pos`` (3) + ``ee_ori`` (axis-angle, 3) + ``gripper_states`` (jaw angle and velocity, 2), LIBERO's 8.

The reader takes one instruction per file, and the instruction names the cube colour(s), so the demos of a task are
grouped into one file per instruction: ``<out>/<task>/<instruction with _>_demo.hdf5``.

Resumable and deterministic: attempt ``j`` always plays the scene of the same seed (:func:`attempt_seed`), each
successful episode is written atomically to its own shard (``<out>/<task>/.shards/demo_<j>.hdf5``), and the files
are assembled (atomically) once ``episodes`` shards exist, so a killed run loses at most the episode in flight and a
re-run produces the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import atomic_path, atomic_write_text
from ..libero.suites import CAMERA_KEYS, write_demo
from .env import MAX_STEPS, SO101Env
from .expert import rollout
from .scene import TASKS, sample_scene

__all__ = ["GenerateConfig", "attempt_seed", "generate", "instruction_file"]

#: Our camera names to the LIBERO-layout camera names the training reader knows.
CAMERA_NAMES = {"front": "agentview", "wrist": "eye_in_hand"}


def attempt_seed(seed: int, task: str, attempt: int) -> int:
    """The scene seed of one attempt, stable across runs and Python versions."""
    return int.from_bytes(hashlib.sha256(f"so101/{seed}/{task}/{attempt}".encode()).digest()[:4], "little")


def instruction_file(instruction: str) -> str:
    """The file name of an instruction's demos."""
    return "_".join(instruction.split()) + "_demo.hdf5"


@dataclass
class GenerateConfig:
    """What :func:`generate` makes (the fields of ``grids-vla data so101``)."""

    task: str
    episodes: int
    out: str
    image_size: int = 128
    seed: int = 0
    max_attempts: int | None = None
    max_steps: int | None = None
    action_noise: float = 0.0

    def __post_init__(self) -> None:
        self.out = os.fspath(self.out)
        if isinstance(self.action_noise, bool) or not isinstance(self.action_noise, int | float) \
                or not 0 <= self.action_noise <= 1:
            raise ValueError(f"--action-noise: found {self.action_noise!r}, expected a number in [0, 1]")
        if self.task not in TASKS:
            raise ValueError(f"--task: found {self.task!r}, expected one of {', '.join(TASKS)}")
        for flag, value, low in (("--episodes", self.episodes, 1), ("--image-size", self.image_size, 16),
                                 ("--max-attempts", self.max_attempts, 1), ("--max-steps", self.max_steps, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"{flag}: found {value!r}, expected an int >= {low}")


def _write_shard(path: Path, rec: dict[str, Any]) -> None:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for k in ("attempt", "seed", "instruction", "action_noise"):
            f.attrs[k] = rec[k]
        f.create_dataset("states", data=rec["states"])
        f.create_dataset("actions", data=rec["actions"])
        g = f.create_group("obs")
        for k, v in rec["obs"].items():
            g.create_dataset(k, data=v)


def _assemble(path: Path, shards: list[Path], info: dict[str, Any]) -> None:
    """Write one instruction's LIBERO-layout file from its episode shards (atomically)."""
    import h5py

    total = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        for i, shard in enumerate(shards):
            with h5py.File(shard, "r") as s:
                # LIBERO's stored orientation (turned by 180 degrees); the reader turns it back
                images = {CAMERA_KEYS[name]: s["obs"][cam][()][:, ::-1, ::-1]
                          for cam, name in CAMERA_NAMES.items() if cam in s["obs"]}
                total += write_demo(data.create_group(f"demo_{i}"), s, images)
        data.attrs["problem_info"] = json.dumps({"problem_name": f"so101_{info['task']}",
                                                 "language_instruction": info["instruction"]})
        data.attrs["language_instruction"] = info["instruction"]
        data.attrs["bddl_file_name"] = f"so101/{info['task']}"
        data.attrs["env_args"] = json.dumps(info["env_args"])
        data.attrs["num_demos"] = len(shards)
        data.attrs["total"] = total
        data.attrs["image_orientation"] = "turned by 180 degrees, as in official LIBERO files"
        data.attrs["cameras"] = json.dumps({CAMERA_KEYS[v]: k for k, v in CAMERA_NAMES.items()})
        data.attrs["action_space"] = "[dx, dy, dz] in units of 0.025 m (clipped to [-1, 1]), grasp (0 closed, 1 open)"
        data.attrs["generator"] = "grids_vla SO-101 scripted expert (privileged state), in-distribution scenes"


def _shard_info(path: Path) -> tuple[int, str]:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f.attrs["attempt"]), str(f.attrs["instruction"])


def _shard_noise(path: Path) -> float:
    """The action noise a shard was made with (shards from before the option: 0)."""
    import h5py

    with h5py.File(path, "r") as f:
        return float(f.attrs.get("action_noise", 0.0))


def generate(task: str, episodes: int, out: str | os.PathLike[str], *, log: Any = sys.stderr,
             **options: Any) -> dict[str, Any]:
    """Make ``episodes`` successful expert demos of ``task`` under ``out/<task>``; returns counts per instruction.

    ``options`` are the other :class:`GenerateConfig` fields. Resumes from whatever ``out`` already holds;
    ``max_attempts`` (default 2 x episodes + 10) bounds the rollouts, so an expert that keeps failing ends with
    fewer demos instead of looping forever.
    """
    cfg = GenerateConfig(task, episodes, out, **options)
    root = Path(cfg.out) / task
    shard_dir = root / ".shards"
    max_attempts = cfg.max_attempts or 2 * episodes + 10
    horizon = cfg.max_steps or MAX_STEPS[task]
    shards = sorted(shard_dir.glob("demo_*.hdf5"))
    made_with = _shard_noise(shards[0]) if shards else cfg.action_noise
    if made_with != cfg.action_noise:
        raise ValueError(f"--action-noise {cfg.action_noise}: {root} already holds demos made with "
                         f"--action-noise {made_with}; use another --out")
    attempt = max((_shard_info(s)[0] + 1 for s in shards), default=0)
    done = len(shards)
    started, made, tried = time.time(), 0, 0
    env = None
    try:
        while done < episodes and attempt < max_attempts:
            if env is None:
                env = SO101Env(task, image_size=cfg.image_size)
            s_seed = attempt_seed(cfg.seed, task, attempt)
            env.reset(scene=sample_scene(task, s_seed))
            rng = np.random.default_rng(s_seed) if cfg.action_noise > 0 else None
            r = rollout(env, horizon, record=True, action_noise=cfg.action_noise, rng=rng)
            tried += 1
            if r.success:
                rec = {"attempt": attempt, "seed": s_seed, "instruction": env.instruction, "states": r.states,
                       "actions": r.actions, "obs": r.obs, "action_noise": cfg.action_noise}
                _write_shard(shard_dir / f"demo_{attempt:05d}.hdf5", rec)
                done += 1
                made += 1
            rate = (time.time() - started) / max(made, 1)
            print(f"[so101 {task}] attempt {attempt}: {'ok' if r.success else 'fail'} {r.steps} steps | "
                  f"{done}/{episodes} demos | {rate:.1f} s/demo", file=log, flush=True)
            attempt += 1
    finally:
        if env is not None:
            env.close()
    shards = sorted(shard_dir.glob("demo_*.hdf5"))[:episodes]
    groups: dict[str, list[Path]] = {}
    for s in shards:
        groups.setdefault(_shard_info(s)[1], []).append(s)
    env_args = {"env": "so101", "task": task, "image_size": cfg.image_size, "seed": cfg.seed, "action_dim": 4}
    if cfg.action_noise:  # only then, so files made without noise stay byte-identical to earlier ones
        env_args["action_noise"] = cfg.action_noise
    for instruction, files in sorted(groups.items()):
        _assemble(root / instruction_file(instruction), files, {"task": task, "instruction": instruction,
                                                               "env_args": env_args})
    summary = {"task": task, "seed": cfg.seed, "image_size": cfg.image_size, "action_noise": cfg.action_noise,
               "demos": len(shards),
               "new_demos": made, "attempts": attempt, "seconds": round(time.time() - started, 1),
               "instructions": {k: len(v) for k, v in sorted(groups.items())}}
    atomic_write_text(root / "summary.json", json.dumps(summary, indent=2))
    return summary
