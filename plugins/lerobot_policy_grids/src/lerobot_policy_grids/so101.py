"""A LeRobot policy checkpoint in the simulated SO-101 scenes: ``python -m lerobot_policy_grids.so101``.

``export`` writes ``grids-vla data so101`` demos as a local LeRobotDataset
(:func:`grids_vla.envs.so101.export_lerobot.export_lerobot`); ``eval`` plays the ``pretrained_model`` folder that
``lerobot-train`` writes (any policy type: upstream ``act``, ``act_grids``, ``smolvla_grids``, ...) in the scenes
``grids-vla eval --env so101`` plays, with the same scene list, episode records and results files
(:mod:`grids_vla.experiments.evaluate_so101`), so the two evaluations compare episode by episode.

The observation is built as the exported dataset's features: the env's ``front`` and ``wrist`` cameras as
``observation.images.front`` / ``observation.images.wrist`` (upright RGB rendered at the checkpoint's image size,
handed to LeRobot's ``preprocess_observation`` as a gym env's ``pixels``: float ``(1, 3, H, W)`` in ``[0, 1]``, as
``LeRobotDataset`` returns frames), ``observation.state`` (``state_vector``: ee_pos, ee axis-angle, jaw angle and
velocity, float32) and the scene's instruction as ``task``. Then, as ``lerobot-eval`` does, the pre-processor saved
with the checkpoint (normalisation, tokenisation, device), ``select_action`` (its action queue: one action per
step) and the saved post-processor (unnormalisation); the 4-D action goes to the env as it comes.

For a GridS policy (one with a ``grids`` sampler: ``act_grids``, ``smolvla_grids``, ``pi0_grids``, ...) the points
of every model call are recorded per camera and scored against the scene's targets with the library's functions
(on-target rate, mobility, fixed-grid and random baselines), as ``grids-vla eval --env so101`` does.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from grids_vla._cli_fields import add_dataclass_fields, picked_fields
from grids_vla._io import file_sha256
from grids_vla.envs.libero.suites import state_vector
from grids_vla.envs.so101.export_lerobot import SO101_LAYOUT, SO101ExportConfig, export_lerobot
from grids_vla.envs.so101.scene import N_OOD, TASKS
from grids_vla.experiments.evaluate_so101 import (
    DEFAULT_EPISODES,
    VIDEO_FPS,
    Progress,
    SO101EvalConfig,
    TargetMasks,
    finish_episode,
    noise_seed,
    open_run,
    scene_for,
    scene_record,
    scene_run,
    target_pixels,
    write_so101_results,
)
from grids_vla.experiments.points import episode_points
from grids_vla.experiments.report import check_video, video_frame
from grids_vla.experiments.rollout import BLIND_VALUE, check_blind
from grids_vla.sampling import coords_to_image_fraction

__all__ = ["SO101LeRobotEvalConfig", "GridSPoints", "check_features", "evaluate_lerobot_so101", "load_checkpoint",
           "main", "so101_observation"]

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
#: ACT's ResNet halves the image five times, each time rounding up: a cell of its feature map is 32 px.
ACT_STRIDE = 32


@dataclass
class SO101LeRobotEvalConfig:
    """Options of one evaluation; field names double as ``eval`` flags."""

    policy_path: str = ""
    task: str = "pick_place_bowl"
    scenes: str = "in"
    episodes: int | None = None
    max_steps: int | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    out: str = "outputs/eval_so101_lerobot"
    video: int = 0
    fresh: bool = False
    blind: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.policy_path:
            raise ValueError("--policy-path is required: the pretrained_model folder lerobot-train writes")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--seed: found {self.seed!r}, expected an int >= 0")
        check_video(self.video, imageio=False)  # the videos are written by LeRobot's own writer
        # the library's checks of the flags both evaluations share (task, scenes, episode count, step limit, threads)
        shared = SO101EvalConfig(checkpoint=self.policy_path, task=self.task, scenes=self.scenes,
                                 episodes=self.episodes, max_steps=self.max_steps, threads=self.threads, out=self.out)
        self.episodes = shared.episodes


# ------------------------------------------------------------------------------------------------ the checkpoint


def resolve_policy_path(path: str) -> Path:
    """The ``pretrained_model`` folder: ``path`` itself, or ``path/checkpoints/last/pretrained_model`` when ``path`` is
    a ``lerobot-train`` output folder."""
    p = Path(path)
    for cand in (p, p / "checkpoints" / "last" / "pretrained_model"):
        if (cand / "config.json").is_file():
            p = cand
            break
    else:
        raise FileNotFoundError(f"--policy-path: found no config.json in {path} (nor in its checkpoints/last/"
                                f"pretrained_model); expected the pretrained_model folder lerobot-train writes")
    for name in ("model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        if not (p / name).is_file():
            raise FileNotFoundError(f"--policy-path: {p} has no {name}; expected a pretrained_model folder written "
                                    f"by lerobot-train (weights and the pre/post-processors saved with them)")
    return p


def load_checkpoint(path: Path, device: str) -> tuple[Any, Any, Any]:
    """The policy (eval mode, on ``device``) and the pre- and post-processors saved with it, loaded through
    LeRobot's API as ``lerobot-eval`` loads them; third-party policy plugins are registered first."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors
    from lerobot.utils.import_utils import register_third_party_plugins

    register_third_party_plugins()
    cfg = PreTrainedConfig.from_pretrained(str(path))
    cfg.pretrained_path = str(path)
    cfg.device = device
    policy = get_policy_class(cfg.type).from_pretrained(str(path), config=cfg)
    policy.eval()
    pre, post = make_pre_post_processors(cfg, pretrained_path=str(path),
                                         preprocessor_overrides={"device_processor": {"device": device}})
    return policy, pre, post


def check_features(config: Any, where: str) -> tuple[tuple[str, ...], int | None]:
    """The env cameras a policy reads and their image side, from its input / output features; anything the SO-101
    export does not write is a one-line error naming ``where`` (the checkpoint's config.json)."""
    expected = (f"{', '.join(IMAGE_PREFIX + c for c in SO101_LAYOUT.cameras)} (3, S, S), {STATE_KEY} "
                f"({len(SO101_LAYOUT.state_names)},); action ({len(SO101_LAYOUT.action_names)},)")
    cameras, sides = [], set()
    for key, feat in config.input_features.items():
        shape = tuple(feat.shape)
        if key.startswith(IMAGE_PREFIX) and key[len(IMAGE_PREFIX):] in SO101_LAYOUT.cameras:
            if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2]:
                raise ValueError(f"{where}: input feature {key} has shape {shape}, expected (3, S, S) (SO-101 "
                                 f"renders square images)")
            cameras.append(key[len(IMAGE_PREFIX):])
            sides.add(shape[1])
        elif key == STATE_KEY and shape == (len(SO101_LAYOUT.state_names),):
            continue
        else:
            raise ValueError(f"{where}: input feature {key} {shape} is not one the SO-101 export writes; expected "
                             f"{expected}")
    if len(sides) > 1:
        raise ValueError(f"{where}: the cameras have sizes {sorted(sides)}, expected one (the env renders every "
                         f"camera at one size)")
    out = {k: tuple(f.shape) for k, f in config.output_features.items()}
    if out != {ACTION_KEY: (len(SO101_LAYOUT.action_names),)}:
        raise ValueError(f"{where}: output features {out}, expected {{'action': ({len(SO101_LAYOUT.action_names)},)}} "
                         f"([dx, dy, dz, grasp])")
    return tuple(cameras), (sides.pop() if sides else None)


def so101_observation(obs: dict[str, np.ndarray], cameras: tuple[str, ...], instruction: str,
                      blind: tuple[str, ...] = ()) -> dict[str, Any]:
    """One SO-101 env observation as a LeRobot batch of 1 with the exported dataset's features (see the module
    docstring), before the policy's pre-processor; the ``blind`` cameras are uniform grey (``BLIND_VALUE``)."""
    from lerobot.envs.utils import preprocess_observation

    missing = [c for c in cameras if c not in obs]
    if missing:
        raise KeyError(f"the env rendered no camera {missing}; it has {sorted(k for k in obs if obs[k].ndim == 3)}")
    pixels = {cam: np.full_like(obs[cam], BLIND_VALUE) if cam in blind else obs[cam] for cam in cameras}
    raw = {"pixels": pixels, "agent_pos": state_vector(obs).astype(np.float32)}
    batch = preprocess_observation(raw)
    batch["task"] = [instruction]
    return batch


# ---------------------------------------------------------------------------------------------------- GridS points


class GridSPoints:
    """Where a GridS policy's sampler put its points in the latest model call, per env camera, as fractions of the
    image: a forward hook on every ``GridSampler`` of ``policy.grids`` converts the coordinates it returns with its
    own token grid and convention; :meth:`take` matches them to the policy's ``grids_last_output()`` cameras."""

    def __init__(self, policy: Any) -> None:
        from grids_vla.grids import GridSampler

        self._policy = policy
        self._seen: dict[int, tuple[torch.Tensor, tuple[int, int]]] = {}
        self._handles = [m.register_forward_hook(self._hook, with_kwargs=True) for m in policy.grids.modules()
                         if isinstance(m, GridSampler)]
        if not self._handles:
            raise ValueError(f"{type(policy).__name__}.grids holds no GridSampler")

    def _hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if output.coords is None:
            return
        grid = args[1] if len(args) > 1 else kwargs.get("grid_size")
        _, _, hw = module.parse_input(args[0], grid, kwargs.get("layout"))
        frac = coords_to_image_fraction(output.coords.detach().float(), hw, module.align_corners)
        self._seen[output.coords.data_ptr()] = (frac.cpu(), hw)

    def take(self) -> dict[str, tuple[np.ndarray, tuple[int, int]]]:
        """``{env camera: ((K, 2) image fractions (x right, y down) of batch item 0, token grid)}`` of the calls
        since the last ``take``."""
        found = {}
        for key, out in self._policy.grids_last_output().items():
            cam = key[len(IMAGE_PREFIX):] if key.startswith(IMAGE_PREFIX) else key
            hit = None if out.coords is None else self._seen.get(out.coords.data_ptr())
            if hit is not None and cam in SO101_LAYOUT.cameras:
                found[cam] = (hit[0][0].double().numpy(), hit[1])
        self._seen.clear()
        return found

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def points_problem(config: Any, side: int | None) -> str | None:
    """Why a GridS policy's points cannot be placed on the camera image exactly (``None``: they can)."""
    if side is None:
        return "the policy reads no camera"
    if config.type.startswith("act") and side % ACT_STRIDE:
        return (f"ACT's feature map covers ceil({side} / {ACT_STRIDE}) x {ACT_STRIDE} px, not the {side} px image; "
                f"points are scored at sides that are multiples of {ACT_STRIDE}")
    size = getattr(config, "resize_imgs_with_padding", None)
    if size is not None and size[0] != size[1]:
        return f"the policy pads the square images to {tuple(size)}; points are scored for square resizes only"
    return None


class _ModelCalls:
    """Counts module forward calls (all modules, while installed): a ``select_action`` that ran none popped a queued
    action, one that ran some predicted a new chunk."""

    def __init__(self) -> None:
        self.n = 0
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._count)

    def _count(self, module: Any, args: Any) -> None:
        self.n += 1

    def remove(self) -> None:
        self._handle.remove()


# ------------------------------------------------------------------------------------------------------ an episode


def run_episode(env: Any, policy: Any, pre: Any, post: Any, scene: Any, cameras: tuple[str, ...], max_steps: int,
                calls: _ModelCalls, probe: GridSPoints | None = None, masks: TargetMasks | None = None,
                record: bool = False, blind: tuple[str, ...] = ()) -> dict[str, Any]:
    """Roll out one episode: success, steps, latencies (s) of the ``select_action`` calls that ran the model, the
    SHA-256 of the executed actions; with ``probe``, ``points`` per camera (points, targets, target masks in pixels at
    each model call); with ``record``, ``video`` frames (images and the latest points as image fractions; the rendered
    images, also of the ``blind`` cameras, which the policy sees grey)."""
    obs = env.reset(scene=scene)
    policy.reset()
    latencies: list[float] = []
    looks: dict[str, dict[str, list[np.ndarray]]] = {}
    grids: dict[str, tuple[int, int]] = {}
    video: list[dict[str, Any]] = []
    latest: dict[str, np.ndarray] = {}
    steps, success = 0, False
    digest = hashlib.sha256()
    progress = Progress(env)
    while steps < max_steps and not success:
        batch = pre(so101_observation(obs, cameras, env.instruction, blind))
        n0, t0 = calls.n, time.perf_counter()
        with torch.inference_mode():
            action = policy.select_action(batch)
        dt = time.perf_counter() - t0
        if calls.n > n0:
            latencies.append(dt)
            if probe is not None:
                for cam, (frac, grid) in probe.take().items():
                    latest[cam], grids[cam] = frac, grid
                    d = looks.setdefault(cam, {"points": [], "targets": [], "masks": []})
                    d["points"].append(frac * env.image_size)
                    d["targets"].append(target_pixels(env, cam))
                    d["masks"].append(masks(env, cam))
        if record:
            video.append({"images": {c: obs[c].copy() for c in cameras}, "points": dict(latest)})
        a = post(action).to("cpu").numpy().astype(np.float64).reshape(-1)
        digest.update(a.tobytes())
        obs, success = env.step(a)
        progress(env)
        steps += 1
    if record:
        video.append({"images": {c: obs[c].copy() for c in cameras}, "points": dict(latest)})
    points = {cam: {k: np.stack(v) for k, v in d.items()} for cam, d in looks.items()} or None
    return {"success": bool(success), "steps": steps, "latencies": latencies, "points": points, "grids": grids,
            "video": video, "actions_sha256": digest.hexdigest(), "progress": progress.record()}


def write_episode_video(path: Path, frames: list[dict[str, Any]], cameras: tuple[str, ...], fps: int) -> None:
    """An MP4 of every step (cameras side by side, upscaled 2x, the latest points as rings) through LeRobot's
    ``write_video``, written under a temporary name and renamed when complete."""
    from lerobot.utils.io_utils import write_video

    images = []
    for fr in frames:
        pts = fr["points"]
        coords = (torch.from_numpy(np.stack([pts[c] for c in cameras]))[None].float()
                  if cameras and all(c in pts for c in cameras) else None)
        # fractions are their own coordinates with align_corners=False (the grid is then unused)
        images.append(video_frame(fr["images"], coords, cameras, (1, 1), False))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write_video(str(tmp), images, fps)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------- the evaluation


def evaluate_lerobot_so101(cfg: SO101LeRobotEvalConfig, log: Any = None) -> dict[str, Any]:
    """Run (or resume) the evaluation; returns the results dict also written to ``<out>/results.json``."""
    import lerobot
    from grids_vla.envs.so101.env import MAX_STEPS, SO101Env
    from lerobot.utils.random_utils import set_seed

    log = sys.stderr if log is None else log
    path = resolve_policy_path(cfg.policy_path)
    policy, pre, post = load_checkpoint(path, cfg.device)
    pcfg = policy.config
    cameras, side = check_features(pcfg, str(path / "config.json"))
    check_blind(cfg.blind, cameras)
    is_grids = hasattr(policy, "grids") and hasattr(policy, "grids_last_output")
    no_points = points_problem(pcfg, side) if is_grids else "not a GridS policy"
    max_steps = cfg.max_steps or MAX_STEPS[cfg.task]
    execute = getattr(pcfg, "n_action_steps", 1)
    run = {"checkpoint": str(path), "weights_sha256": file_sha256(path / "model.safetensors"),
           **scene_run(cfg.task, cfg.scenes, cfg.episodes, max_steps), "execute": execute,
           "chunk": getattr(pcfg, "chunk_size", None) or execute, "threads": cfg.threads, "image_size": side,
           "reducer": "grids" if is_grids else "dense", "k": getattr(pcfg, "grids_k", None),
           "cameras": [IMAGE_PREFIX + c for c in cameras], "env_cameras": list(cameras), "fast_render": True,
           "workers": 1, "policy_type": pcfg.type, "lerobot": lerobot.__version__, "device": cfg.device,
           "seed": cfg.seed, "noise_seeds": "seed + episode (in), seed + 100000 + episode (ood)",
           "points": "recorded" if no_points is None else f"not recorded: {no_points}"}
    if cfg.blind:  # only when set, so evaluations from before the option still resume
        run["blind"] = list(cfg.blind)
    out = Path(cfg.out)
    episodes = open_run(out, run, cfg.episodes, cfg.fresh)
    done = {e["episode"] for e in episodes}
    n_video = cfg.episodes if cfg.video == -1 else cfg.video
    t_start = time.perf_counter()
    env = SO101Env(cfg.task, image_size=side or 16, cameras=cameras)
    masks = TargetMasks()
    probe = GridSPoints(policy) if no_points is None else None
    calls = _ModelCalls()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        for i in (i for i in range(cfg.episodes) if i not in done):
            scene = scene_for(cfg.task, cfg.scenes, i)
            seed = cfg.seed + noise_seed(cfg.scenes, i)
            set_seed(seed)
            record = i < n_video
            ep = run_episode(env, policy, pre, post, scene, cameras, max_steps, calls, probe, masks, record, cfg.blind)
            rec = {**scene_record(cfg.task, cfg.scenes, i, scene), "success": ep["success"], "steps": ep["steps"],
                   **ep["progress"], "actions_sha256": ep["actions_sha256"],
                   "latencies_ms": [round(1000 * x, 4) for x in ep["latencies"]]}
            if ep["points"] is not None:
                grid = next(iter(ep["grids"].values()))
                rec["points"] = episode_points(ep["points"], SimpleNamespace(image_size=side, grid=grid), seed=seed)
            if record:
                name = Path("videos") / f"{cfg.task}_{cfg.scenes}{i:03d}.mp4"
                write_episode_video(out / name, ep["video"], cameras, VIDEO_FPS)
                rec["visuals"] = [str(name)]
            finish_episode(out, run, episodes, rec, t_start, log)
    finally:
        calls.remove()
        if probe is not None:
            probe.remove()
        masks.close()
        env.close()
        torch.set_num_threads(old_threads)
    return write_so101_results(out, run, episodes)


# ------------------------------------------------------------------------------------------------------ the command

EVAL_HELP = {
    "policy_path": "the pretrained_model folder lerobot-train writes (or its output folder: then "
                   "checkpoints/last/pretrained_model)",
    "task": f"SO-101 task: {' or '.join(TASKS)}",
    "scenes": f"in (seeded in-distribution scenes, never trained on) or ood (the {N_OOD} fixed OOD scenes)",
    "episodes": f"episodes (default: {DEFAULT_EPISODES['in']} in, {N_OOD} ood; ood N: the first N scenes)",
    "max_steps": "step limit per episode (default: the task's, 160)",
    "seed": "base seed of the policy's noise (episode i: seed + i in, seed + 100000 + i ood); scenes do not depend "
            "on it",
    "device": "torch device of the policy and its pre-processor",
    "threads": "torch CPU threads",
    "out": "output folder: run.json, episodes.jsonl (a rerun resumes), results.json, results.md, videos/",
    "video": "MP4s of the first N episodes (-1: all) with the GridS points drawn",
    "fresh": "start over instead of resuming the episodes in --out",
    "blind": "env cameras (e.g. front wrist) shown to the policy as a uniform grey image: how much success remains "
             "without them says how much the policy uses them",
}
EXPORT_HELP = {
    "data": "a *_demo.hdf5 file of `grids-vla data so101` or a folder of them (e.g. DATA/pick_place_bowl)",
    "out": "dataset root to create",
    "repo_id": "the dataset's id in its metadata (nothing is uploaded; pass it as --dataset.repo_id)",
    "fps": "frames per second (the env's control rate)",
    "max_demos_per_file": "keep the first N demos of each instruction file",
    "robot_type": "robot type in the metadata",
    "overwrite": "replace an existing --out",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lerobot_policy_grids.so101",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show an error's traceback instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ev = sub.add_parser("eval", help="play a lerobot-train checkpoint in the SO-101 scenes (in or ood)")
    add_dataclass_fields(ev, SO101LeRobotEvalConfig, help=EVAL_HELP)
    ex = sub.add_parser("export", help="write `grids-vla data so101` demos as a local LeRobotDataset")
    add_dataclass_fields(ex, SO101ExportConfig, help=EXPORT_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "export":
            values = picked_fields(args, SO101ExportConfig)
            s = export_lerobot(values.pop("data"), values.pop("out"), **values)
            print(f"{s['episodes']} episodes, {s['frames']} frames -> {s['root']} (repo id {s['repo_id']})")
            return 0
        cfg = SO101LeRobotEvalConfig(**picked_fields(args, SO101LeRobotEvalConfig))
        res = evaluate_lerobot_so101(cfg)
    except (ValueError, OSError, KeyError, IndexError, ImportError) as e:
        if args.debug or os.environ.get("GRIDS_DEBUG") == "1":
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"lerobot_policy_grids.so101 {args.command}: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2
    o, lat = res["overall"], res["latency_ms"]
    median = "-" if lat["median"] is None else f"{lat['median']:.2f} ms"
    print(f"success {o['successes']}/{o['episodes']} (95 % CI {o['ci95'][0]:.2f}-{o['ci95'][1]:.2f}), mean length "
          f"{o['mean_episode_length']:.1f}, median latency per model call {median}; results in {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
