"""Evaluation results: the episode log, summaries and the markdown report, and the videos / contact sheets of
episodes with the reducer's sampling points drawn over the cameras."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_path, atomic_write_text
from ..policy.configuration_grids_vla import kept_tokens
from ..policy.modeling_grids_vla import GridSVLAPolicy
from .points import BASELINES, RADIUS_FRACTION, aggregate_points, align_corners
from .stats import wilson_interval

__all__ = ["EPISODES_NAME", "RUN_NAME", "VIDEO_FPS", "summarize", "to_markdown", "write_results", "load_episodes",
           "append_episode", "load_imageio", "draw_points_np", "video_frame", "write_mp4", "save_visuals"]

#: LIBERO's control frequency: MP4s play one frame per env step in real time.
VIDEO_FPS = 20
EPISODES_NAME = "episodes.jsonl"
RUN_NAME = "run.json"


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
                       "batch_size": 1, "threads": run["threads"], "device": run.get("device", "cpu")},
        "tasks": tasks,
        "points": aggregate_points([e.get("points") for e in episodes], run["image_size"]),
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
    if res.get("points"):
        lines += ["", *points_markdown(res["points"], run["image_size"])]
    return "\n".join(lines) + "\n"


def points_markdown(points: dict[str, Any], image_size: int) -> list[str]:
    """Lines of a markdown paragraph and table: where the points looked (an evaluation's ``points`` summary)."""
    radius = RADIUS_FRACTION * image_size
    lines = [f"Where the points looked, at every policy call: mobility (spread of a point within an episode and of "
             f"its mean across episodes, image fractions) and the share of points within {radius:g} px of the object "
             f"to move, the target or the gripper, or on their pixels, against the fixed-grid anchors, uniform "
             f"random points and the policy's own points held still at their mean over each episode, on the same "
             f"frames.", "",
             "| camera | calls | moves within | moves across | within r | fixed grid | random | held still "
             "| on target px | fixed grid | random | held still |", "|---|" + "---:|" * 11]
    for cam, a in points.items():
        kinds = [a["policy"], *(a.get(kind, {}) for kind in BASELINES)]
        lines.append(f"| {cam} | {a['frames']} | {_fmt(a['within_episode'], '.4f')} | "
                     f"{_fmt(a['across_episodes'], '.4f')} | "
                     + " | ".join(_fmt(d.get(k), ".3f") for k in ("within_radius", "on_mask") for d in kinds) + " |")
    return lines


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def write_results(out: Path, run: dict[str, Any], episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Rewrite ``results.json`` and ``results.md`` (atomically) from the episodes so far; returns the summary."""
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


def append_episode(path: Path, record: dict[str, Any]) -> None:
    """Append one finished episode to the log, synced, so a kill loses at most the line being written."""
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
    imageio = load_imageio()
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    # keep_suffix: ffmpeg picks the container by it; macro_block_size=2: H.264 needs even sides, the default (16)
    # would rescale other sizes
    with atomic_path(path, keep_suffix=True) as tmp, \
            imageio.get_writer(str(tmp), fps=fps, codec="libx264", macro_block_size=2) as writer:
        for frame in frames:
            writer.append_data(frame)


def save_visuals(out: Path, name: str, ep: dict[str, Any], policy: GridSVLAPolicy, n_frames: int,
                 fps: int) -> list[str]:
    """Contact sheet PNG (both cameras at a few policy calls, points via :func:`grids_vla.viz.save_points_figure`) and
    an MP4 of every control step (``fps`` frames per second) with the points drawn over both cameras."""
    from ..viz import save_points_figure

    frames = ep["frames"]
    if not frames:
        return []
    cfg = policy.config
    align = align_corners(policy)
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


def check_video(value: Any, imageio: bool = True) -> None:
    """``--video``: how many episodes to film (0: none, -1: all); with any and ``imageio`` (the library's writer,
    :func:`write_mp4`), imageio must load now, not after the first episode."""
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(f"--video: found {value!r}, expected a number of episodes (0: none, -1: all)")
    if value and imageio:
        load_imageio()


def load_imageio() -> Any:
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
