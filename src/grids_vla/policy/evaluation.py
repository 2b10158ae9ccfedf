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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configuration_grids_vla import kept_tokens
from .modeling_grids_vla import CONFIG_NAME, WEIGHTS_NAME, GridSVLAPolicy, atomic_write_text, load_config

__all__ = ["EvalConfig", "evaluate", "wilson_interval", "mcnemar_exact", "paired_outcomes", "load_episodes",
           "parse_perturbation", "default_max_steps", "observation_to_batch", "resolve_checkpoint", "task_instruction",
           "video_frame", "write_mp4"]

#: Neutral action used while the scene settles: no motion, gripper open.
NOOP_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
#: LIBERO's control frequency: MP4s play one frame per env step in real time.
VIDEO_FPS = 20
EPISODES_NAME = "episodes.jsonl"
RUN_NAME = "run.json"
Z95 = 1.959963984540054  # two-sided 95 % normal quantile


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

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ValueError("--checkpoint is required")
        if isinstance(self.video, bool):  # the field used to be a switch: True still means every episode
            self.video = -1 if self.video else 0
        if not isinstance(self.video, int) or self.video < -1:
            raise ValueError(f"video must be a number of episodes (0: none, -1: all), got {self.video!r}")
        if self.video:
            _imageio()  # fail now, not after the first episode
        for name in ("episodes_per_task", "threads", "workers", "video_frames"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.settle_steps, int) or self.settle_steps < 0:
            raise ValueError(f"settle_steps must be a non-negative int, got {self.settle_steps!r}")
        for name in ("max_steps", "execute"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.tasks is not None:
            self.tasks = tuple(int(t) for t in self.tasks)
            if not self.tasks or len(set(self.tasks)) != len(self.tasks):
                raise ValueError(f"tasks must be a non-empty list of unique ids, got {list(self.tasks)}")


# ---------------------------------------------------------------------------------------------------------- helpers


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``(0, 1)`` when ``n == 0``)."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # the bounds are exactly 0 / 1 there; avoid rounding
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" each discordant pair is a fair coin flip."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a}, {only_b}")
    n, low = only_a + only_b, min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_outcomes(a: list[dict], b: list[dict]) -> dict[str, int]:
    """Pair two evaluations' episodes by ``(task_id, init_state)``; count both / only a / only b / neither succeeding.

    Both must hold the same episodes (the same tasks and init states), else the pairing would be silently partial.
    """
    def index(episodes: list[dict], name: str) -> dict[tuple[int, int], bool]:
        out = {}
        for e in episodes:
            key = (int(e["task_id"]), int(e["init_state"]))
            if key in out:
                raise ValueError(f"evaluation {name} holds episode task {key[0]} init state {key[1]} twice")
            out[key] = bool(e["success"])
        return out

    ia, ib = index(a, "a"), index(b, "b")
    if ia.keys() != ib.keys():
        raise ValueError(f"the evaluations hold different episodes: {len(ia.keys() - ib.keys())} only in a, "
                         f"{len(ib.keys() - ia.keys())} only in b")
    pairs = [(ia[k], ib[k]) for k in ia]
    return {"both": sum(x and y for x, y in pairs), "only_a": sum(x and not y for x, y in pairs),
            "only_b": sum(y and not x for x, y in pairs), "neither": sum(not (x or y) for x, y in pairs)}


def default_max_steps(suite: str) -> int:
    """LIBERO's standard step limit for ``suite`` (LIBERO-PRO variants use their base suite's)."""
    from ..envs.libero.env import MAX_STEPS

    for base in sorted(MAX_STEPS, key=len, reverse=True):
        if suite == base or suite.startswith(base + "_"):
            return MAX_STEPS[base]
    raise ValueError(f"no standard step limit for suite {suite!r}; pass --max-steps")


def parse_perturbation(spec: str | None, suite: str) -> tuple[str, list[Any]]:
    """``NAME[:SEVERITY]`` -> (suite to build, perturbation objects). ``pro:VARIANT`` selects a LIBERO-PRO suite,
    ``liberoplus:PATTERN`` the matching LIBERO-plus tasks (needs ``.venv-liberoplus``)."""
    from ..envs.libero.perturb import make_perturbation, pro_suite

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


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A ``save_pretrained`` folder, or a training run folder (its latest checkpoint)."""
    from .training import latest_checkpoint

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if (p / CONFIG_NAME).is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is not None:
        return latest
    raise FileNotFoundError(f"{p} is neither a policy checkpoint (no {CONFIG_NAME}) nor a training run folder")


def observation_to_batch(obs: dict[str, np.ndarray], cameras: tuple[str, ...], instruction: str) -> dict[str, Any]:
    """One env observation as a batch of 1 in the demo reader's format (upright uint8 images, 8-D state)."""
    from ..envs.libero.data import quat_to_axis_angle

    batch: dict[str, Any] = {}
    for cam in cameras:
        if cam not in obs:
            raise KeyError(f"the environment renders no camera {cam!r}; it has {sorted(obs)}")
        batch[cam] = torch.from_numpy(np.ascontiguousarray(obs[cam])).permute(2, 0, 1).unsqueeze(0)
    state = np.concatenate([obs["ee_pos"], quat_to_axis_angle(obs["ee_quat"]), obs["gripper_states"]])
    batch["state"] = torch.from_numpy(state.astype(np.float32)).unsqueeze(0)
    batch["instruction"] = [instruction]
    return batch


class _CoordsProbe:
    """Forward hook that keeps the reducer coordinates of the policy's latest call (``PolicyOutput.coords``)."""

    def __init__(self, policy: torch.nn.Module) -> None:
        self.coords: torch.Tensor | None = None
        self._handle = policy.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.coords = None if output.coords is None else output.coords.detach().cpu()

    def remove(self) -> None:
        self._handle.remove()


def _imageio() -> Any:
    """``imageio.v2`` with a working ffmpeg, or an ImportError that says what to install."""
    hint = "--video needs imageio with ffmpeg: pip install imageio imageio-ffmpeg (or pip install 'grids-vla[video]')"
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg
    except ImportError as e:
        raise ImportError(hint) from e
    try:
        imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise ImportError(f"{hint}; imageio-ffmpeg found no ffmpeg binary ({e})") from e
    return imageio


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------- rollout


def run_episode(env: Any, policy: GridSVLAPolicy, init_index: int, max_steps: int, execute: int, settle_steps: int,
                record: bool = False) -> dict[str, Any]:
    """Roll out one episode from init state ``init_index``; returns success, steps, per-call latencies (s) and, with
    ``record``, ``frames`` (the observation at each policy call with the reducer's coordinates) and ``video`` (every
    observation from the first policy call to the end, ``steps + 1`` of them, each with the coordinates of the call
    whose action it was given to)."""
    cams = policy.config.cameras
    obs = env.reset(init_index)
    for _ in range(settle_steps):
        obs, _, _, _ = env.step(NOOP_ACTION)
    probe = _CoordsProbe(policy) if record else None
    noise_gen = torch.Generator().manual_seed(init_index)  # a flow head's sampling noise: same episode, same actions
    latencies: list[float] = []
    frames: list[dict[str, Any]] = []
    video: list[dict[str, Any]] = []
    steps, success = 0, False

    def snap() -> dict[str, Any]:
        return {"step": steps, "images": {c: obs[c].copy() for c in cams}, "coords": probe.coords}

    try:
        while steps < max_steps and not success:
            batch = observation_to_batch(obs, cams, env.instruction)
            t0 = time.perf_counter()
            chunk = policy.predict_action(batch, generator=noise_gen)[0]
            latencies.append(time.perf_counter() - t0)
            if probe is not None:
                frames.append(snap())
                video.append(frames[-1])
            actions = chunk[:execute].double().clamp(-1.0, 1.0).numpy()
            for j, a in enumerate(actions):
                obs, _, success, _ = env.step(a)
                steps += 1
                if success or steps >= max_steps:
                    break
                if probe is not None and j < len(actions) - 1:  # the chunk's last obs goes to the next call
                    video.append(snap())
        if probe is not None and latencies:
            video.append(snap())  # the final observation
    finally:
        if probe is not None:
            probe.remove()
    return {"success": bool(success), "steps": steps, "latencies": latencies, "frames": frames, "video": video}


# ------------------------------------------------------------------------------------------------------- reporting


def summarize(run: dict[str, Any], episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-task and overall success (with 95 % Wilson intervals), mean episode length and median latency."""
    tasks: dict[str, Any] = {}
    for t in run["tasks"]:
        eps = [e for e in episodes if e["task_id"] == t]
        n, s = len(eps), sum(e["success"] for e in eps)
        lo, hi = wilson_interval(s, n)
        tasks[str(t)] = {"task_id": t, "instruction": run["instructions"][str(t)], "episodes": n, "successes": s,
                         "success_rate": s / n if n else None, "ci95": [lo, hi],
                         "mean_episode_length": statistics.fmean(e["steps"] for e in eps) if eps else None}
    n, s = len(episodes), sum(e["success"] for e in episodes)
    lo, hi = wilson_interval(s, n)
    lat = [x for e in episodes for x in e["latencies_ms"]]
    succ_len = [e["steps"] for e in episodes if e["success"]]
    return {
        "run": run,
        "complete": n == len(run["tasks"]) * run["episodes_per_task"],
        "overall": {"episodes": n, "successes": s, "success_rate": s / n if n else None, "ci95": [lo, hi],
                    "mean_episode_length": statistics.fmean(e["steps"] for e in episodes) if episodes else None,
                    "mean_success_length": statistics.fmean(succ_len) if succ_len else None},
        "latency_ms": {"median": statistics.median(lat) if lat else None, "calls": len(lat),
                       "batch_size": 1, "threads": run["threads"], "device": "cpu"},
        "tasks": tasks,
    }


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def to_markdown(res: dict[str, Any]) -> str:
    """The results as a markdown report."""
    run, o, lat = res["run"], res["overall"], res["latency_ms"]
    pert = run["perturbation"] or "none"
    lines = [
        f"# Evaluation: {run['suite']} ({'complete' if res['complete'] else 'partial'})", "",
        f"- checkpoint: `{run['checkpoint']}` ({run['reducer']}, {kept_tokens(run['reducer'], run['k'])}, "
        f"{run['image_size']} px)",
        f"- perturbation: {pert}; step limit {run['max_steps']} after {run['settle_steps']} settle steps; "
        f"{run['execute']} of {run['chunk']} chunk actions executed per call",
        f"- success: **{o['successes']}/{o['episodes']}** = {_fmt(_pct(o['success_rate']))} % "
        f"(95 % Wilson {_fmt(100 * o['ci95'][0])}-{_fmt(100 * o['ci95'][1])} %)",
        f"- mean episode length: {_fmt(o['mean_episode_length'])} steps (successes only: "
        f"{_fmt(o['mean_success_length'])})",
        f"- policy latency per call, batch 1, {lat['threads']} thread(s): median {_fmt(lat['median'], '.2f')} ms "
        f"over {lat['calls']} calls"
        + (f" ({run['workers']} worker processes, so measured beside the other simulators)"
           if run.get("workers", 1) > 1 else ""), "",
        "| task | instruction | success | 95 % CI | mean length |", "|---:|---|---:|---:|---:|",
    ]
    for t in res["tasks"].values():
        lines.append(f"| {t['task_id']} | {t['instruction']} | {t['successes']}/{t['episodes']} | "
                     f"{_fmt(100 * t['ci95'][0], '.0f')}-{_fmt(100 * t['ci95'][1], '.0f')} % | "
                     f"{_fmt(t['mean_episode_length'])} |")
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _write_results(out: Path, run: dict[str, Any], episodes: list[dict[str, Any]]) -> dict[str, Any]:
    res = summarize(run, episodes)
    atomic_write_text(out / "results.json", json.dumps(res, indent=2))
    atomic_write_text(out / "results.md", to_markdown(res))
    return res


def load_episodes(path: Path) -> list[dict[str, Any]]:
    """Finished episodes of an earlier run (a line cut short by a kill is dropped)."""
    if not path.is_file():
        return []
    eps = []
    for line in path.read_text().splitlines():
        try:
            eps.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return eps


def _append_episode(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------------------------ video


def draw_points_np(image: np.ndarray, coords: torch.Tensor | None, grid: tuple[int, int], align_corners: bool,
                   scale: int = 2) -> np.ndarray:
    """Upscale an ``(H, W, 3)`` uint8 frame by ``scale`` and draw each coordinate as a small white ring."""
    from ..sampling import coords_to_image_fraction

    img = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1).copy()
    if coords is None:
        return img
    h, w = img.shape[:2]
    frac = coords_to_image_fraction(coords.float(), grid, align_corners).numpy()
    yy, xx = np.mgrid[0:h, 0:w]
    r = max(2.0, 0.02 * w)
    for fx, fy in frac:
        d = np.hypot(xx - fx * w, yy - fy * h)
        img[(d >= r - 1) & (d <= r)] = 255
    return img


def video_frame(images: dict[str, np.ndarray], coords: torch.Tensor | None, cameras: tuple[str, ...],
                grid: tuple[int, int], align_corners: bool, scale: int = 2) -> np.ndarray:
    """One MP4 frame: every camera upscaled by ``scale`` with its sampling points (:func:`draw_points_np`), side by
    side in ``cameras`` order; ``coords`` is ``(1, cameras, T, 2)`` as in ``PolicyOutput.coords``, or ``None``."""
    return np.concatenate([draw_points_np(images[cam], None if coords is None else coords[0, ci], grid, align_corners,
                                          scale) for ci, cam in enumerate(cameras)], axis=1)


def write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Encode uint8 ``(H, W, 3)`` frames (even sides) as H.264 MP4 atomically: a temp file in the same folder, then
    a rename, so a killed run never leaves a truncated video under the final name."""
    imageio = _imageio()
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # keeps the suffix: ffmpeg picks the container by it
    try:
        # macro_block_size=2: H.264 needs even sides; the default (16) would rescale other sizes
        with imageio.get_writer(str(tmp), fps=fps, codec="libx264", macro_block_size=2) as writer:
            for frame in frames:
                writer.append_data(frame)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_visuals(out: Path, name: str, ep: dict[str, Any], policy: GridSVLAPolicy, n_frames: int,
                  fps: int) -> list[str]:
    """Contact sheet PNG (both cameras at a few policy calls, points via :func:`grids_vla.viz.save_points_figure`) and
    an MP4 of every control step (``fps`` frames per second) with the points drawn over both cameras."""
    from ..viz import save_points_figure

    frames = ep["frames"]
    if not frames:
        return []
    cfg = policy.config
    align = next((bool(m.align_corners) for m in policy.reducer.modules() if hasattr(m, "align_corners")), True)
    picks = sorted({round(i * (len(frames) - 1) / max(n_frames - 1, 1)) for i in range(n_frames)})
    panels = []
    for i in picks:
        fr = frames[i]
        for ci, cam in enumerate(cfg.cameras):
            img = torch.from_numpy(fr["images"][cam]).permute(2, 0, 1).float() / 255.0
            coords = fr["coords"][0, ci] if fr["coords"] is not None else torch.empty(0, 2)
            panels.append((img, coords, cfg.grid, f"{cam} t={fr['step']}"))
    written = []
    sheet = out / "videos" / f"{name}.png"
    sheet.parent.mkdir(parents=True, exist_ok=True)
    save_points_figure(str(sheet), panels, align_corners=align)
    written.append(str(sheet.relative_to(out)))
    mp4 = out / "videos" / f"{name}.mp4"
    write_mp4(mp4, [video_frame(fr["images"], fr["coords"], cfg.cameras, cfg.grid, align) for fr in ep["video"]], fps)
    written.append(str(mp4.relative_to(out)))
    return written


# ------------------------------------------------------------------------------------------------------------- main


class _EpisodeRunner:
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

    def __init__(self, setup: Setup, policy: GridSVLAPolicy) -> None:
        self.setup, self.policy = setup, policy
        self.env: Any = None
        self.task: int | None = None

    def _env_for(self, t: int) -> Any:
        from ..envs.libero.env import make_env

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
        ep = run_episode(self._env_for(t), self.policy, i, s.max_steps, s.execute, s.settle_steps, record=record)
        rec = {"task_id": t, "episode": i, "init_state": i, "success": ep["success"], "steps": ep["steps"],
               "latencies_ms": [round(1000 * x, 4) for x in ep["latencies"]]}
        if record:
            rec["visuals"] = _save_visuals(Path(s.out), f"task{t:02d}_ep{i:03d}", ep, self.policy, s.video_frames,
                                           VIDEO_FPS)
        return rec

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env, self.task = None, None


_WORKER: dict[str, _EpisodeRunner] = {}  # the runner of an evaluation worker process


def _worker_init(setup: _EpisodeRunner.Setup, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["runner"] = _EpisodeRunner(setup, GridSVLAPolicy.from_pretrained(setup.checkpoint).eval())


def _worker_play(t: int, i: int, record: bool) -> dict[str, Any]:
    return _WORKER["runner"].play(t, i, record)


def evaluate(cfg: EvalConfig, log: Any = None) -> dict[str, Any]:
    """Run (or resume) an evaluation; returns the results dict also written to ``<out>/results.json``."""
    from ..envs.libero.env import get_suite

    log = sys.stderr if log is None else log
    ckpt = resolve_checkpoint(cfg.checkpoint)
    mcfg = load_config(ckpt)
    suite, scene = parse_perturbation(cfg.perturbation, cfg.suite)  # fails early on a bad spec
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
    max_steps = cfg.max_steps or default_max_steps(suite)
    execute = min(cfg.execute or mcfg.chunk, mcfg.chunk)
    # Loaded here even when workers load their own copies: a bad checkpoint fails now, with its own error.
    policy = GridSVLAPolicy.from_pretrained(ckpt).eval()
    run = {"checkpoint": str(ckpt), "weights_sha256": _sha256(ckpt / WEIGHTS_NAME), "suite": suite,
           "perturbation": cfg.perturbation, "tasks": tasks, "instructions": instructions,
           "episodes_per_task": cfg.episodes_per_task, "max_steps": max_steps, "execute": execute,
           "chunk": mcfg.chunk, "settle_steps": cfg.settle_steps, "threads": cfg.threads, "image_size": mcfg.image_size,
           "reducer": mcfg.reducer, "k": mcfg.k, "cameras": list(mcfg.cameras), "msaa": False,
           "workers": cfg.workers}
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
    setup = _EpisodeRunner.Setup(str(ckpt), suite, cfg.perturbation if scene else None, instructions, max_steps,
                                 execute, cfg.settle_steps, str(out), cfg.video_frames)
    t_start = time.perf_counter()

    def finished(rec: dict[str, Any]) -> None:
        _append_episode(ep_path, rec)
        episodes.append(rec)
        o = _write_results(out, run, episodes)["overall"]
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
        runner = _EpisodeRunner(setup, policy)
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
                                 initializer=_worker_init, initargs=(setup, cfg.threads)) as pool:
            futures = [pool.submit(_worker_play, *job) for job in jobs]  # FIFO: workers take them in task order
            try:
                for fut in as_completed(futures):
                    finished(fut.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # stop handing out episodes; let running ones end
                raise
    return _write_results(out, run, episodes)

