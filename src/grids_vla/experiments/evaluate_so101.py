"""Closed-loop evaluation of a compact VLA checkpoint on the simulated SO-101 arm (``grids-vla eval --env so101``).

Scenes: ``--scenes in`` plays ``episodes`` seeded in-distribution scenes, episode ``i`` the scene
``sample_scene(task, IN_SEED_BASE + i)`` with ``IN_SEED_BASE = 2**32``: every scene seed ``grids-vla data so101``
plays is a 32-bit number (``attempt_seed``, whatever its ``--seed``), and so is every OOD scene's layout seed, so the
evaluation scenes are never ones the policy was trained on. ``--scenes ood`` plays the 21 fixed out-of-distribution
scenes (``ood_scenes(task)``; ``episodes`` N: the first N). An episode starts right after the reset, as the demos do
(no settle steps), and runs until the task succeeds or the step limit (the task's, 160).

Observations go to the policy exactly as the demo reader (``LiberoDemoDataset``) hands the demo frames to training:
the ``front`` camera as ``agentview`` and the ``wrist`` camera as ``eye_in_hand`` (upright uint8 ``(3, S, S)``,
rendered at the policy's ``image_size`` with the fast settings the demos were rendered with), the state
``ee_pos + ee_ori (axis-angle of ee_quat, the data writer's conversion) + gripper_states`` and the scene's
instruction. Each policy call predicts an action chunk, of which the first ``execute`` actions run before re-planning.

The output folder has the layout of the LIBERO evaluation (:mod:`.evaluate`): ``episodes.jsonl`` (one line per
finished episode: a rerun with the same settings resumes), ``run.json``, ``results.json`` and ``results.md``
(rewritten after every episode), with ``video=N`` MP4s (10 frames per second, the control rate) and contact sheets
of the first N episodes with the GridS points drawn, in ``videos/``. Where the points look is measured at every
policy call (:mod:`.points`) against the simulator's object positions: the cube to move, the bowl or the cube to
stack on, and the gripper's grasp point, projected into each camera with MuJoCo's camera matrices, and their pixels
from MuJoCo's segmentation rendering.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._cli_fields import picked_fields
from .._io import atomic_write_text, file_sha256
from ..envs.so101.scene import BOWL_RIM_HEIGHT, N_OOD, TASKS, Scene, ood_scenes, sample_scene
from ..policy.checkpoint import WEIGHTS_NAME, resolve_checkpoint
from ..policy.configuration_grids_vla import check_counts
from ..policy.modeling_grids_vla import GridSVLAPolicy
from . import rollout
from .points import episode_points
from .report import (
    EPISODES_NAME,
    RUN_NAME,
    append_episode,
    check_video,
    load_episodes,
    save_visuals,
    summarize,
    to_markdown,
)

__all__ = ["IN_SEED_BASE", "POLICY_CAMERAS", "Progress", "SCENE_SETS", "SO101EvalConfig", "TargetMasks",
           "evaluate_so101", "finish_episode", "noise_seed", "observation_to_batch", "open_run", "progress_markdown",
           "progress_summary", "run_episode", "run_so101_eval", "scene_for", "scene_record", "scene_run",
           "summarize_so101", "target_names", "target_pixels", "write_so101_results"]

#: Episode ``i`` of ``--scenes in`` plays ``sample_scene(task, IN_SEED_BASE + i)``: above every 32-bit training seed.
IN_SEED_BASE = 2**32
SCENE_SETS = ("in", "ood")
DEFAULT_EPISODES = {"in": 50, "ood": N_OOD}
#: The policy's camera names (those of the demo files) -> the env's cameras (``generate.CAMERA_NAMES`` inverted).
POLICY_CAMERAS = {"agentview": "front", "eye_in_hand": "wrist"}
#: The SO-101 control rate: MP4s play one frame per env step in real time.
VIDEO_FPS = 10
#: How far a failed episode got: ``reached`` when the grasp point came within REACH_M of the cube to move's centre,
#: ``lifted`` when that cube, held, rose LIFT_M above where it started.
REACH_M, LIFT_M = 0.02, 0.02
INSTRUCTIONS = {"pick_place_bowl": "put the COLOUR cube in the bowl",
                "stack": "stack the COLOUR cube on the COLOUR cube"}


@dataclass
class SO101EvalConfig:
    """Options of one SO-101 evaluation run; field names double as ``grids-vla eval --env so101`` flags."""

    checkpoint: str = ""
    task: str = "pick_place_bowl"
    scenes: str = "in"
    episodes: int | None = None
    max_steps: int | None = None
    execute: int | None = None
    threads: int = 1
    out: str = "outputs/eval_so101"
    video: int = 0
    fresh: bool = False
    video_frames: int = 4
    blind: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ValueError("--checkpoint is required")
        if self.task not in TASKS:
            raise ValueError(f"--task: found {self.task!r}, expected one of {', '.join(TASKS)}")
        if self.scenes not in SCENE_SETS:
            raise ValueError(f"--scenes: found {self.scenes!r}, expected in or ood")
        check_counts(self, ("episodes", "max_steps", "execute", "threads", "video_frames"), optional=True)
        if self.episodes is None:
            self.episodes = DEFAULT_EPISODES[self.scenes]
        if self.scenes == "ood" and self.episodes > N_OOD:
            raise ValueError(f"--episodes: found {self.episodes}, but there are {N_OOD} OOD scenes")
        check_video(self.video)


def scene_for(task: str, scenes: str, i: int) -> Scene:
    """The scene of episode ``i``: in-distribution seed ``IN_SEED_BASE + i``, or OOD scene ``i``."""
    return sample_scene(task, IN_SEED_BASE + i) if scenes == "in" else ood_scenes(task)[i]


def noise_seed(scenes: str, i: int) -> int:
    """The seed of episode ``i``'s policy noise (and of its random-points baseline): ``i`` in distribution,
    ``100000 + i`` in the OOD scenes."""
    return i if scenes == "in" else 100_000 + i


def observation_to_batch(obs: dict[str, np.ndarray], cameras: tuple[str, ...], instruction: str,
                         blind: tuple[str, ...] = ()) -> dict[str, Any]:
    """One SO-101 env observation as a batch of 1 in the demo reader's format: the env's cameras under the demo files'
    names (:data:`POLICY_CAMERAS`; the ``blind`` ones uniform grey), the 8-D state, the instruction."""
    unknown = [c for c in cameras if c not in POLICY_CAMERAS]
    if unknown:
        raise KeyError(f"the policy reads cameras {unknown} that SO-101 demos do not have; they have "
                       f"{list(POLICY_CAMERAS)}")
    named = {cam: obs[POLICY_CAMERAS[cam]] for cam in cameras}
    state = {k: obs[k] for k in ("ee_pos", "ee_quat", "gripper_states")}
    return rollout.observation_to_batch({**named, **state}, cameras, instruction, blind)


# ------------------------------------------------------------------------------------------- targets in the images


def target_names(env: Any) -> list[str]:
    """The task's targets: the cube to move, the bowl or the cube to stack on, and the gripper."""
    return ["target", "bowl" if env.task == "pick_place_bowl" else "base_cube", "gripper"]


def _target_world(env: Any) -> np.ndarray:
    """(3, 3) world positions of :func:`target_names`: cube centres, the bowl's centre at half its rim height, and
    the grasp point between the jaws."""
    second = (env.object_pos("bowl") + [0.0, 0.0, BOWL_RIM_HEIGHT / 2] if env.task == "pick_place_bowl"
              else env.object_pos("base_cube"))
    return np.stack([env.object_pos("target"), second, env.grasp_point])


def target_pixels(env: Any, camera: str) -> np.ndarray:
    """``(3, 2)`` continuous ``(x, y)`` pixel positions of :func:`target_names` in env camera ``camera``'s upright
    image at the env's image size (``x`` right in ``[0, W]``, ``y`` down in ``[0, H]``); ``inf`` behind the camera."""
    m, d = env.model, env.data
    cam = m.camera(camera).id
    local = (_target_world(env) - d.cam_xpos[cam]) @ d.cam_xmat[cam].reshape(3, 3)  # camera frame, looking down -z
    depth = -local[:, 2]
    focal = 1.0 / np.tan(np.deg2rad(m.cam_fovy[cam]) / 2.0)  # square images: the same in x and y
    with np.errstate(divide="ignore", invalid="ignore"):
        ndc = focal * local[:, :2] / depth[:, None]  # x right, y up
    px = np.stack([(1.0 + ndc[:, 0]) / 2.0, (1.0 - ndc[:, 1]) / 2.0], axis=1) * env.image_size
    px[depth <= 1e-6] = np.inf
    return px


class Progress:
    """Tracks how far an episode gets: the closest the grasp point comes to the cube to move (m) and the most that
    cube rises while held (m); call after every env step."""

    def __init__(self, env: Any) -> None:
        self.z0 = float(env.object_pos("target")[2])
        self.reach, self.lift = np.inf, 0.0
        self(env)

    def __call__(self, env: Any) -> None:
        cube = env.object_pos("target")
        self.reach = min(self.reach, float(np.linalg.norm(env.grasp_point - cube)))
        if env.held("target"):
            self.lift = max(self.lift, float(cube[2]) - self.z0)

    def record(self) -> dict[str, Any]:
        return {"reach_cm": round(100 * self.reach, 2), "lift_cm": round(100 * self.lift, 2),
                "reached": self.reach < REACH_M, "lifted": self.lift > LIFT_M}


class TargetMasks:
    """``(H, W)`` bool masks of the pixels showing a target (:func:`target_names`; the gripper is its whole subtree)
    in an env camera's upright image, from MuJoCo's segmentation rendering; one renderer per compiled model."""

    def __init__(self) -> None:
        self._model: Any = None
        self._renderer: Any = None
        self._geoms: np.ndarray | None = None

    def _setup(self, env: Any) -> None:
        import mujoco

        m = env.model
        self.close()
        bodies = {m.body(n).id for n in target_names(env)}
        for b in range(m.nbody):  # MuJoCo orders bodies so a parent precedes its children
            if m.body_parentid[b] in bodies and b != 0:
                bodies.add(b)
        self._geoms = np.flatnonzero(np.isin(m.geom_bodyid, list(bodies)))
        self._renderer = mujoco.Renderer(m, env.image_size, env.image_size)
        self._renderer.enable_segmentation_rendering()
        self._model = m

    def __call__(self, env: Any, camera: str) -> np.ndarray:
        import mujoco

        if env.model is not self._model:
            self._setup(env)
        self._renderer.update_scene(env.data, camera=camera)
        seg = self._renderer.render()
        return (seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM)) & np.isin(seg[..., 0], self._geoms)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
        self._renderer, self._model = None, None


# ------------------------------------------------------------------------------------------------------ an episode


def run_episode(env: Any, policy: GridSVLAPolicy, scene: Scene, max_steps: int, execute: int, noise_seed: int = 0,
                record: bool = False, points: bool = True, masks: TargetMasks | None = None,
                blind: tuple[str, ...] = ()) -> dict[str, Any]:
    """Roll out one episode in ``scene`` (the SO-101 counterpart of :func:`.rollout.run_episode`; the result:
    :func:`.rollout.play_episode` with the episode's ``progress``). Images are kept under the policy's camera names;
    with ``points`` and a policy with sampling points, the targets are measured in each camera (``masks``: a
    segmentation renderer to reuse). The ``blind`` cameras are shown to the policy as a uniform grey image."""
    cams = policy.config.cameras
    obs = env.reset(scene=scene)
    measure = points and policy.config.reducer != "dense"
    own_masks = masks is None and measure
    masks = TargetMasks() if own_masks else masks
    progress = Progress(env)

    def step(action: np.ndarray) -> tuple[Any, bool]:
        obs, success = env.step(action)
        progress(env)
        return obs, success

    def targets(cam: str) -> tuple[np.ndarray, np.ndarray]:
        return target_pixels(env, POLICY_CAMERAS[cam]), masks(env, POLICY_CAMERAS[cam])

    try:
        ep = rollout.play_episode(policy, obs, to_batch=lambda o: observation_to_batch(o, cams, env.instruction, blind),
                                  step=step, image=lambda o, cam: o[POLICY_CAMERAS[cam]], noise_seed=noise_seed,
                                  max_steps=max_steps, execute=execute, record=record,
                                  targets=targets if measure else None)
    finally:
        if own_masks:
            masks.close()
    return {**ep, "progress": progress.record()}


# --------------------------------------------------------------------------------------------------- the evaluation


def scene_record(task: str, scenes: str, i: int, scene: Scene) -> dict[str, Any]:
    """The start of episode ``i``'s ``episodes.jsonl`` record: task, scene set, episode, scene id (``in/<seed>`` or
    ``ood/<i>``), instruction, light, table and distractors."""
    return {"task_id": task, "scenes": scenes, "episode": i,
            "scene": f"in/{IN_SEED_BASE + i}" if scenes == "in" else f"ood/{i}",
            "instruction": scene.instruction, "light": scene.light, "table": scene.table,
            "distractors": [f"{d.colour} {d.shape}" for d in scene.distractors]}


def scene_run(task: str, scenes: str, episodes: int, max_steps: int) -> dict[str, Any]:
    """The ``run.json`` fields that describe the scenes played (whatever the policy): suite, task, scene set, scene
    seeds, perturbation, episodes, step limit."""
    return {"env": "so101", "suite": f"so101 {task}, {'in-distribution' if scenes == 'in' else 'OOD'} scenes",
            "task": task, "scenes": scenes,
            "scene_seeds": f"sample_scene(task, {IN_SEED_BASE} + episode)" if scenes == "in"
            else "ood_scenes(task)[episode]",
            "perturbation": None if scenes == "in" else "OOD scenes: distractors, light, table colour",
            "tasks": [task], "instructions": {task: INSTRUCTIONS[task]}, "episodes_per_task": episodes,
            "max_steps": max_steps, "settle_steps": 0}


def _check_policy(policy: GridSVLAPolicy, instructions: set[str]) -> None:
    c = policy.config
    if c.action_dim != 4:
        raise ValueError(f"the policy predicts {c.action_dim}-D actions; SO-101 takes 4 ([dx, dy, dz, grasp]): train "
                         f"it on `grids-vla data so101` demos with --action-dim 4")
    if c.state_dim != 8:
        raise ValueError(f"the policy reads a {c.state_dim}-D state; SO-101 demos hold 8 (ee_pos, ee_ori, gripper)")
    unknown = [cam for cam in c.cameras if cam not in POLICY_CAMERAS]
    if unknown:
        raise ValueError(f"the policy reads cameras {unknown}; SO-101 demos have {list(POLICY_CAMERAS)}")
    if c.language == "learned":
        missing = sorted(s for s in instructions if s not in c.instructions)
        if missing:
            raise ValueError(f"the policy was trained without the instructions {missing[:3]} (learned language knows "
                             f"only config.instructions); train on demos that hold every colour of the task")


def progress_summary(episodes: list[dict[str, Any]]) -> dict[str, int] | None:
    """How many episodes reached the cube, lifted it and succeeded (``None`` if any episode lacks the fields: an
    evaluation from before they were recorded)."""
    if not episodes or any("reached" not in e for e in episodes):
        return None
    return {"episodes": len(episodes), "reached": sum(e["reached"] for e in episodes),
            "lifted": sum(e["lifted"] for e in episodes), "success": sum(e["success"] for e in episodes)}


def progress_markdown(res: dict[str, Any]) -> str:
    """``results.md``'s line on how far the episodes got (empty without ``res["progress"]``)."""
    prog = res.get("progress")
    if not prog:
        return ""
    n = prog["episodes"]
    return (f"How far the episodes got: the grasp point within {100 * REACH_M:.0f} cm of the cube to move in "
            f"{prog['reached']}/{n}, the cube held and lifted {100 * LIFT_M:.0f} cm in {prog['lifted']}/{n}, success "
            f"in {prog['success']}/{n}.\n")


def _markdown(res: dict[str, Any], episodes: list[dict[str, Any]]) -> str:
    lines = [to_markdown(res).rstrip("\n"), ""]
    if res.get("progress"):
        lines += [progress_markdown(res).rstrip("\n"), ""]
    lines += ["| episode | scene | instruction | light | table | distractors | closest to cube (cm) | lifted (cm) | "
              "success | steps |", "|---:|---|---|---|---|---|---:|---:|---|---:|"]
    for e in sorted(episodes, key=lambda e: e["episode"]):
        lines.append(f"| {e['episode']} | {e['scene']} | {e['instruction']} | {e['light']} | {e['table']} | "
                     f"{', '.join(e['distractors']) or '-'} | {e.get('reach_cm', '-')} | {e.get('lift_cm', '-')} | "
                     f"{'yes' if e['success'] else 'no'} | {e['steps']} |")
    return "\n".join(lines) + "\n"


def summarize_so101(run: dict[str, Any], episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`.report.summarize` plus ``progress`` (:func:`progress_summary`) when the episodes record it."""
    res = summarize(run, episodes)
    prog = progress_summary(episodes)
    if prog is not None:
        res["progress"] = prog
    return res


def write_so101_results(out: Path, run: dict[str, Any], episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Rewrite ``results.json`` and ``results.md`` (atomically) from the episodes so far; returns the summary."""
    res = summarize_so101(run, episodes)
    atomic_write_text(out / "results.json", json.dumps(res, indent=2))
    atomic_write_text(out / "results.md", _markdown(res, episodes))
    return res


def evaluate_so101(cfg: SO101EvalConfig, log: Any = None) -> dict[str, Any]:
    """Run (or resume) an SO-101 evaluation; returns the results dict also written to ``<out>/results.json``."""
    from ..envs.so101.env import MAX_STEPS, SO101Env

    log = sys.stderr if log is None else log
    ckpt = resolve_checkpoint(cfg.checkpoint)
    policy = GridSVLAPolicy.from_pretrained(ckpt).eval()
    mcfg = policy.config
    scenes = [scene_for(cfg.task, cfg.scenes, i) for i in range(cfg.episodes)]
    rollout.check_blind(cfg.blind, mcfg.cameras)
    _check_policy(policy, {s.instruction for s in scenes})
    max_steps = cfg.max_steps or MAX_STEPS[cfg.task]
    execute = min(cfg.execute or mcfg.chunk, mcfg.chunk)
    run = {"checkpoint": str(ckpt), "weights_sha256": file_sha256(ckpt / WEIGHTS_NAME),
           **scene_run(cfg.task, cfg.scenes, cfg.episodes, max_steps), "execute": execute, "chunk": mcfg.chunk,
           "threads": cfg.threads, "image_size": mcfg.image_size, "reducer": mcfg.reducer, "k": mcfg.k,
           "cameras": list(mcfg.cameras), "env_cameras": [POLICY_CAMERAS[c] for c in mcfg.cameras],
           "fast_render": True, "workers": 1}
    if cfg.blind:  # only when set, so evaluations from before the option still resume
        run["blind"] = list(cfg.blind)
    out = Path(cfg.out)
    episodes = open_run(out, run, cfg.episodes, cfg.fresh)
    done = {e["episode"] for e in episodes}
    n_video = cfg.episodes if cfg.video == -1 else cfg.video
    todo = [i for i in range(cfg.episodes) if i not in done]
    t_start = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    env = SO101Env(cfg.task, image_size=mcfg.image_size, cameras=tuple(POLICY_CAMERAS[c] for c in mcfg.cameras))
    masks = TargetMasks()
    try:
        for i in todo:
            scene = scenes[i]
            seed = noise_seed(cfg.scenes, i)  # the flow head's noise
            record = i < n_video
            ep = run_episode(env, policy, scene, max_steps, execute, seed, record=record, masks=masks,
                             blind=tuple(cfg.blind))
            rec = {**scene_record(cfg.task, cfg.scenes, i, scene),
                   "success": ep["success"], "steps": ep["steps"], **ep["progress"],
                   "actions_sha256": ep["actions_sha256"],
                   "latencies_ms": [round(1000 * x, 4) for x in ep["latencies"]]}
            if ep["points"] is not None:
                rec["points"] = episode_points(ep["points"], mcfg, seed=seed)
            if record:
                rec["visuals"] = save_visuals(out, f"{cfg.task}_{cfg.scenes}{i:03d}", ep, policy, cfg.video_frames,
                                              VIDEO_FPS)
            finish_episode(out, run, episodes, rec, t_start, log)
    finally:
        masks.close()
        env.close()
        torch.set_num_threads(old_threads)
    return write_so101_results(out, run, episodes)


def open_run(out: Path, run: dict[str, Any], episodes: int, fresh: bool) -> list[dict[str, Any]]:
    """Create ``out`` and write ``run.json``; returns the finished episodes (below ``episodes``) of an earlier run
    with the same settings in ``out`` (a resume), or none with ``fresh``; other settings in ``out`` are an error."""
    out.mkdir(parents=True, exist_ok=True)
    ep_path, run_path = out / EPISODES_NAME, out / RUN_NAME
    done: list[dict[str, Any]] = []
    if not fresh and ep_path.is_file() and run_path.is_file():
        old = json.loads(run_path.read_text())
        changed = {k: (old.get(k), v) for k, v in run.items() if k != "episodes_per_task" and old.get(k) != v}
        if changed:
            raise ValueError(f"{out} holds an evaluation with other settings {changed} (earlier vs now); use another "
                             f"--out or --fresh")
        done = [e for e in load_episodes(ep_path) if e["episode"] < episodes]
    else:
        ep_path.unlink(missing_ok=True)
    atomic_write_text(run_path, json.dumps(run, indent=2))
    atomic_write_text(ep_path, "".join(json.dumps(e) + "\n" for e in done))
    return done


def finish_episode(out: Path, run: dict[str, Any], episodes: list[dict[str, Any]], rec: dict[str, Any],
                   t_start: float, log: Any) -> dict[str, Any]:
    """Append one finished episode's record to ``episodes.jsonl`` and ``episodes``, rewrite the results and log a
    line; returns the results."""
    append_episode(out / EPISODES_NAME, rec)
    episodes.append(rec)
    res = write_so101_results(out, run, episodes)
    o = res["overall"]
    print(f"[so101 {run['task']} {rec['scene']}] {'success' if rec['success'] else 'fail'} in {rec['steps']} "
          f"steps | overall {o['successes']}/{o['episodes']} | {time.perf_counter() - t_start:.0f} s",
          file=log, flush=True)
    return res


# ------------------------------------------------------------------------------------------------------ the command

HELP = {
    "task": f"SO-101 task (--env so101): {' or '.join(TASKS)}",
    "scenes": f"SO-101 scenes (--env so101): in (seeded in-distribution scenes, seeds {IN_SEED_BASE} + i, never "
              f"trained on) or ood (the {N_OOD} fixed OOD scenes)",
    "episodes": f"SO-101 episodes (--env so101; default: {DEFAULT_EPISODES['in']} in, {N_OOD} ood)",
}
#: The flags only an SO-101 evaluation takes (the others are shared with the LIBERO evaluation).
SO101_ONLY = ("task", "scenes", "episodes")


def run_so101_eval(args: argparse.Namespace, libero_fields: tuple[str, ...] = ()) -> int:
    """``grids-vla eval --env so101``: ``libero_fields`` are the LIBERO evaluation's fields, refused here if given."""
    ours = {f.name for f in fields(SO101EvalConfig)}
    foreign = [f"--{n.replace('_', '-')}" for n in libero_fields if n not in ours and n in vars(args)]
    if foreign:
        raise ValueError(f"{', '.join(foreign)}: LIBERO flags; --env so101 takes --task, --scenes, --episodes")
    cfg = SO101EvalConfig(**picked_fields(args, SO101EvalConfig))
    res = evaluate_so101(cfg)
    o, lat = res["overall"], res["latency_ms"]
    print(f"success {o['successes']}/{o['episodes']} (95 % CI {o['ci95'][0]:.2f}-{o['ci95'][1]:.2f}), mean length "
          f"{o['mean_episode_length']:.1f}, median latency {lat['median']:.2f} ms; results in {cfg.out}")
    return 0
