"""Playing LIBERO episodes with a policy: observations to policy batches, one episode, and the runner that keeps a
task's environment open between episodes (in-process, or in evaluation worker processes)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..envs.libero.suites import pro_suite, state_vector
from ..envs.libero.targets import target_mask, target_pixels
from ..policy.modeling_grids_vla import GridSVLAPolicy
from .points import episode_points, policy_pixels
from .report import VIDEO_FPS, save_visuals

__all__ = ["BLIND_VALUE", "NOOP_ACTION", "CoordsProbe", "EpisodeRunner", "check_blind", "image_batch",
           "observation_to_batch", "parse_perturbation", "play_episode", "run_episode", "task_instruction",
           "worker_init", "worker_play"]

#: Neutral action used while the scene settles: no motion, gripper open.
NOOP_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])


def parse_perturbation(spec: str | None, suite: str) -> tuple[str, list[Any]]:
    """``NAME[:SEVERITY]`` -> (suite to build, perturbation objects). ``pro:VARIANT`` selects a LIBERO-PRO suite,
    ``liberoplus:PATTERN`` the matching LIBERO-plus tasks (needs ``.venv-liberoplus``)."""
    from ..envs.libero.perturb import make_perturbation

    if not spec:
        return suite, []
    name, _, sev = spec.partition(":")
    if name == "pro":
        return pro_suite(suite, sev), []
    if name == "liberoplus":
        from ..envs.libero.plus import plus_suite

        return plus_suite(suite, sev), []
    try:
        severity = float(sev) if sev else 0.5
    except ValueError:
        raise ValueError(f"perturbation severity must be a number in [0, 1], got {sev!r} in {spec!r}") from None
    return suite, [make_perturbation(name, severity)]


def task_instruction(bench: Any, task_id: int) -> str:
    """The instruction the env (and so the demo data) uses: the task BDDL's ``:language``, which can differ from
    the benchmark's ``task.language`` (e.g. "pick up" vs "pick")."""
    from libero.libero.envs.bddl_utils import robosuite_parse_problem

    words = robosuite_parse_problem(bench.get_task_bddl_file_path(task_id))["language_instruction"]
    return " ".join(words) if isinstance(words, list | tuple) else str(words)


#: What every pixel of a camera the policy is not shown (an evaluation's ``blind`` cameras) reads: mid grey.
BLIND_VALUE = 128


def image_batch(image: np.ndarray, blind: bool = False) -> torch.Tensor:
    """One ``(H, W, 3)`` uint8 frame as the policy's ``(1, 3, H, W)`` input; ``blind``: every pixel ``BLIND_VALUE``."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
    return torch.full_like(x, BLIND_VALUE) if blind else x


def check_blind(blind: tuple[str, ...], cameras: tuple[str, ...]) -> None:
    """Refuse ``--blind`` cameras the policy does not read, or a camera named twice."""
    if any(c not in cameras for c in blind) or len(set(blind)) != len(blind):
        raise ValueError(f"--blind: found {list(blind)}, expected distinct cameras of the policy: {list(cameras)}")


def observation_to_batch(obs: dict[str, np.ndarray], cameras: tuple[str, ...], instruction: str,
                         blind: tuple[str, ...] = ()) -> dict[str, Any]:
    """One env observation as a batch of 1 in the demo reader's format (upright uint8 images, 8-D state); the
    ``blind`` cameras are shown as a uniform grey image."""
    batch: dict[str, Any] = {}
    for cam in cameras:
        if cam not in obs:
            raise KeyError(f"the environment renders no camera {cam!r}; it has {sorted(obs)}")
        batch[cam] = image_batch(obs[cam], cam in blind)
    batch["state"] = torch.from_numpy(state_vector(obs).astype(np.float32)).unsqueeze(0)
    batch["instruction"] = [instruction]
    return batch


class CoordsProbe:
    """Forward hook that keeps the reducer coordinates of the policy's latest call (``PolicyOutput.coords``)."""

    def __init__(self, policy: torch.nn.Module) -> None:
        self.coords: torch.Tensor | None = None
        self._handle = policy.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.coords = None if output.coords is None else output.coords.detach().cpu()

    def remove(self) -> None:
        self._handle.remove()


def play_episode(policy: GridSVLAPolicy, obs: Any, *, to_batch: Callable[[Any], dict[str, Any]],
                 step: Callable[[np.ndarray], tuple[Any, bool]], image: Callable[[Any, str], np.ndarray],
                 noise_seed: int, max_steps: int, execute: int, record: bool = False,
                 targets: Callable[[str], tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, Any]:
    """The closed loop of any simulator, from the first observation ``obs`` on: ``to_batch(obs)`` is the policy's input,
    the first ``execute`` actions of each predicted chunk go to ``step(action) -> (obs, success)``, until success or
    ``max_steps``. ``image(obs, camera)`` is a policy camera's frame; ``targets(camera)`` (``None``: not measured) the
    task's target pixels and mask in it now. Returns success, steps, per-call latencies (s), the SHA-256 of the executed
    actions (two plays of an episode agree iff they acted the same) and, with ``record``, ``frames`` (the observation at
    each policy call with the reducer's coordinates) and ``video`` (every observation from the first call to the end,
    ``steps + 1`` of them, each with the coordinates of the call whose action it was given to); with ``targets``, per
    camera where the points looked at each call and where the targets were (``points``, see :mod:`.points`)."""
    cams = policy.config.cameras
    probe = CoordsProbe(policy) if record or targets is not None else None
    looks: list[tuple[torch.Tensor, dict[str, tuple[np.ndarray, np.ndarray]]]] = []
    noise_gen = torch.Generator().manual_seed(noise_seed)  # a flow head's sampling noise: same episode, same actions
    latencies: list[float] = []
    frames: list[dict[str, Any]] = []
    video: list[dict[str, Any]] = []
    steps, success = 0, False
    digest = hashlib.sha256()

    def snap() -> dict[str, Any]:
        return {"step": steps, "images": {c: image(obs, c).copy() for c in cams}, "coords": probe.coords}

    try:
        while steps < max_steps and not success:
            batch = to_batch(obs)
            t0 = time.perf_counter()
            chunk = policy.predict_action(batch, generator=noise_gen)[0]
            latencies.append(time.perf_counter() - t0)
            if targets is not None and probe.coords is not None:
                looks.append((probe.coords[0], {c: targets(c) for c in cams}))
            if record:
                frames.append(snap())
                video.append(frames[-1])
            actions = chunk[:execute].double().clamp(-1.0, 1.0).numpy()
            for j, a in enumerate(actions):
                digest.update(a.tobytes())
                obs, success = step(a)
                steps += 1
                if success or steps >= max_steps:
                    break
                if record and j < len(actions) - 1:  # the chunk's last obs goes to the next call
                    video.append(snap())
        if record and latencies:
            video.append(snap())  # the final observation
    finally:
        if probe is not None:
            probe.remove()
    looked = None
    if looks:  # per camera: (calls, K, 2) pixel points, (calls, M, 2) target pixels, (calls, H, W) target masks
        pix = policy_pixels(policy, torch.stack([c for c, _ in looks]))
        looked = {cam: {"points": pix[:, i], "targets": np.stack([t[cam][0] for _, t in looks]),
                        "masks": np.stack([t[cam][1] for _, t in looks])} for i, cam in enumerate(cams)}
    return {"success": bool(success), "steps": steps, "latencies": latencies, "frames": frames, "video": video,
            "points": looked, "actions_sha256": digest.hexdigest()}


def run_episode(env: Any, policy: GridSVLAPolicy, init_index: int, max_steps: int, execute: int, settle_steps: int,
                record: bool = False, points: bool = True, blind: tuple[str, ...] = ()) -> dict[str, Any]:
    """Roll out one LIBERO episode from init state ``init_index`` after ``settle_steps`` no-op steps (the result:
    :func:`play_episode`, whose policy noise is seeded by ``init_index``). With ``points`` and a policy with sampling
    points (any reducer but dense), where they looked is measured against the simulator's targets. The ``blind``
    cameras are shown to the policy as a uniform grey image (the recorded frames stay the rendered ones)."""
    cams = policy.config.cameras
    obs = env.reset(init_index)
    for _ in range(settle_steps):
        obs, _, _, _ = env.step(NOOP_ACTION)

    def step(action: np.ndarray) -> tuple[Any, bool]:
        obs, _, success, _ = env.step(action)
        return obs, success

    measure = points and policy.config.reducer != "dense"
    return play_episode(policy, obs, to_batch=lambda o: observation_to_batch(o, cams, env.instruction, blind),
                        step=step, image=lambda o, cam: o[cam], noise_seed=init_index, max_steps=max_steps,
                        execute=execute, record=record,
                        targets=(lambda cam: (target_pixels(env, cam), target_mask(env, cam))) if measure else None)


class EpisodeRunner:
    """Plays episodes of one evaluation, keeping the current task's environment open between them."""

    @dataclass(frozen=True)
    class Setup:
        checkpoint: str
        suite: str  # the suite to build (a PRO / Plus variant already resolved)
        perturbation: str | None  # a scene perturbation spec (lighting, ...) applied on top, or None
        instructions: dict[str, str]
        max_steps: int
        execute: int
        settle_steps: int
        out: str
        video_frames: int
        blind: tuple[str, ...] = ()  # cameras the policy is shown as uniform grey

    def __init__(self, setup: Setup, policy: GridSVLAPolicy) -> None:
        self.setup, self.policy = setup, policy
        self.env: Any = None
        self.task: int | None = None

    def _env_for(self, t: int) -> Any:
        from ..envs.libero.factory import make_env

        if self.task != t:
            self.close()
            s, mcfg = self.setup, self.policy.config
            _, perturbations = parse_perturbation(s.perturbation, s.suite)
            self.env = make_env(s.suite, t, image_size=mcfg.image_size, cameras=mcfg.cameras, msaa=False,
                                perturbations=perturbations)
            self.task = t
            if self.env.instruction != s.instructions[str(t)]:
                raise RuntimeError(f"{s.suite} task {t}: env instruction {self.env.instruction!r} differs from its "
                                   f"BDDL file's {s.instructions[str(t)]!r}")
        return self.env

    def play(self, t: int, i: int, record: bool) -> dict[str, Any]:
        """Episode ``i`` of task ``t`` (official init state ``i``) as an ``episodes.jsonl`` record."""
        s = self.setup
        ep = run_episode(self._env_for(t), self.policy, i, s.max_steps, s.execute, s.settle_steps, record=record,
                         blind=s.blind)
        rec = {"task_id": t, "episode": i, "init_state": i, "success": ep["success"], "steps": ep["steps"],
               "actions_sha256": ep["actions_sha256"], "latencies_ms": [round(1000 * x, 4) for x in ep["latencies"]]}
        if ep["points"] is not None:
            rec["points"] = episode_points(ep["points"], self.policy.config, seed=1000 * t + i)
        if record:
            rec["visuals"] = save_visuals(Path(s.out), f"task{t:02d}_ep{i:03d}", ep, self.policy, s.video_frames,
                                          VIDEO_FPS)
        return rec

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env, self.task = None, None


_WORKER: dict[str, EpisodeRunner] = {}  # the runner of an evaluation worker process


def worker_init(setup: EpisodeRunner.Setup, threads: int) -> None:
    """Initializer of an evaluation worker process: its torch threads and its own runner (policy loaded here)."""
    torch.set_num_threads(threads)
    _WORKER["runner"] = EpisodeRunner(setup, GridSVLAPolicy.from_pretrained(setup.checkpoint).eval())


def worker_play(t: int, i: int, record: bool) -> dict[str, Any]:
    """Play episode ``i`` of task ``t`` in an evaluation worker process (see :meth:`EpisodeRunner.play`)."""
    return _WORKER["runner"].play(t, i, record)
