"""Do GridS's points see? Mobility and on-target rate of a policy's sampling points, against fixed and random points.

Inputs are per-frame arrays in continuous pixel coordinates of the upright camera image (see
:mod:`grids_vla.envs.libero.targets`): the K points ``(T, K, 2)``, the task's targets ``(T, M, 2)`` (``inf`` for a
target out of view) and optionally their segmentation masks ``(T, H, W)``.

- *Mobility*: how far each point moves. ``within_episode``: the standard deviation of a point's position over the
  frames of one episode (x and y pooled), averaged over points and episodes; ``across_episodes``: the standard
  deviation of each point's per-episode mean position across episodes, averaged over points. A learned fixed
  pattern scores ~0 on both; a point that followed the gripper would move ~0.1 of the image.
- *On-target rate*: the share of (frame, point) pairs within ``radius`` pixels of a target, the mean distance from a
  point to its nearest target, and, with masks, the share of points whose pixel shows a target.

The same numbers for the ``fixed-grid`` anchors and for uniform random points on the same frames are the baselines a
"seeing" GridS has to beat; ``still``, the policy's own points held at their mean position over each episode, says
what the points' movement within an episode adds (a point that follows its target beats its own mean position; a
point that jitters or drifts does not).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BASELINES", "RADIUS_FRACTION", "aggregate_points", "align_corners", "baseline_points", "demo_frames",
           "episode_points", "mobility", "on_target", "points_on_demos", "points_report", "policy_pixels"]

#: The on-target radius as a fraction of the image side: 12 px on the 128 px images of the LIBERO benchmarks.
RADIUS_FRACTION = 12 / 128
#: The on-target baselines every report holds beside the policy's own numbers (see the module's docstring).
BASELINES = ("fixed-grid", "random", "still")


def mobility(episodes: list[np.ndarray], size: float) -> dict[str, float]:
    """Mobility (in image fractions) of points given per episode as ``(T, K, 2)`` pixel arrays of one camera."""
    if not episodes:
        raise ValueError("mobility needs at least one episode of points")
    within = [float(np.mean(ep.std(axis=0))) for ep in episodes if len(ep) > 1]
    means = np.stack([ep.mean(axis=0) for ep in episodes])  # (E, K, 2)
    across = float(np.mean(means.std(axis=0))) if len(episodes) > 1 else float("nan")
    return {"within_episode": float(np.mean(within)) / size if within else float("nan"),
            "across_episodes": across / size}


def on_target(points: np.ndarray, targets: np.ndarray, radius: float,
              masks: np.ndarray | None = None) -> dict[str, float]:
    """On-target numbers of ``points (T, K, 2)`` against ``targets (T, M, 2)`` (and ``masks (T, H, W)``)."""
    if points.ndim != 3 or targets.ndim != 3 or len(points) != len(targets):
        raise ValueError(f"points (T, K, 2) and targets (T, M, 2) must share T; got {points.shape} and {targets.shape}")
    dist = np.linalg.norm(points[:, :, None, :] - targets[:, None, :, :], axis=-1).min(axis=-1)  # (T, K)
    seen = np.isfinite(dist)
    out = {"within_radius": float(np.mean(dist <= radius)),
           "mean_distance_px": float(dist[seen].mean()) if seen.any() else float("nan")}
    if masks is not None:
        h, w = masks.shape[1:]
        col = np.clip(np.floor(points[..., 0]).astype(int), 0, w - 1)
        row = np.clip(np.floor(points[..., 1]).astype(int), 0, h - 1)
        out["on_mask"] = float(np.mean(masks[np.arange(len(points))[:, None], row, col]))
    return out


def baseline_points(kind: str, k: int, n_frames: int, size: float, seed: int = 0,
                    grid: tuple[int, int] | None = None) -> np.ndarray:
    """``(n_frames, K, 2)`` pixel points of a baseline: ``"fixed-grid"`` (GridS's spread anchors on the token
    ``grid``, the ``coords="fixed-grid"`` ablation) or ``"random"`` (uniform, drawn anew each frame from ``seed``)."""
    if kind == "fixed-grid":
        from ..grids import spread_anchors

        anchors = spread_anchors(k, grid).numpy().astype(np.float64) * size
        return np.broadcast_to(anchors, (n_frames, k, 2)).copy()
    if kind == "random":
        return np.random.default_rng(seed).uniform(0.0, size, size=(n_frames, k, 2))
    raise ValueError(f"baseline must be 'fixed-grid' or 'random', got {kind!r}")


def points_report(episodes: list[dict[str, np.ndarray]], size: float, radius: float, seed: int = 0,
                  grid: tuple[int, int] | None = None) -> dict[str, Any]:
    """Mobility and on-target numbers of one camera for the policy and both baselines.

    ``episodes``: one dict per episode with ``points (T, K, 2)``, ``targets (T, M, 2)`` and optionally
    ``masks (T, H, W)``, all in pixels of an image of side ``size``.
    """
    if not episodes:
        raise ValueError("points_report needs at least one episode")
    k = episodes[0]["points"].shape[1]
    points = np.concatenate([e["points"] for e in episodes])
    targets = np.concatenate([e["targets"] for e in episodes])
    masks = np.concatenate([e["masks"] for e in episodes]) if all("masks" in e for e in episodes) else None
    out: dict[str, Any] = {"frames": int(len(points)), "episodes": len(episodes), "k": int(k), "radius_px": radius,
                           "policy": {**mobility([e["points"] for e in episodes], size),
                                      **on_target(points, targets, radius, masks)}}
    for kind in ("fixed-grid", "random"):
        out[kind] = on_target(baseline_points(kind, k, len(points), size, seed, grid), targets, radius, masks)
    still = np.concatenate([np.broadcast_to(e["points"].mean(axis=0), e["points"].shape) for e in episodes])
    out["still"] = on_target(still, targets, radius, masks)
    return out


def align_corners(policy: Any) -> bool:
    """The coordinate convention of ``policy``'s reducer (``True`` when it has none)."""
    return next((bool(m.align_corners) for m in policy.reducer.modules() if hasattr(m, "align_corners")), True)


def policy_pixels(policy: Any, coords: Any) -> np.ndarray:
    """``(..., K, 2)`` reducer coordinates of ``policy`` (a tensor) -> float64 pixel positions in its images."""
    from ..sampling import coords_to_image_fraction

    c = policy.config
    return coords_to_image_fraction(coords.float(), c.grid, align_corners(policy)).double().numpy() * c.image_size


def episode_points(points: dict[str, dict[str, np.ndarray]], config: Any, seed: int) -> dict[str, Any]:
    """The compact per-camera summary of one episode kept in its ``episodes.jsonl`` record: :func:`points_report`
    numbers, the frame count and each point's mean position (for mobility across episodes)."""
    size = config.image_size
    out = {}
    for cam, ep in points.items():
        rep = points_report([ep], size, RADIUS_FRACTION * size, seed, config.grid)
        rep["policy"].pop("across_episodes")
        out[cam] = {"frames": rep["frames"], "mean_px": np.round(ep["points"].mean(axis=0), 3).tolist(),
                    **{kind: {k: None if np.isnan(v) else round(v, 6) for k, v in rep[kind].items()}
                       for kind in ("policy", *BASELINES)}}  # None, not NaN: results stay valid JSON
    return out


def aggregate_points(records: list[dict[str, Any]], size: float) -> dict[str, Any] | None:
    """Per camera over an evaluation's episode ``points`` summaries: mobility within episodes (mean over episodes
    with more than one call) and across episodes (from each episode's mean point positions), and the frame-weighted
    on-target numbers of the policy and the baselines. ``None`` when no episode has points."""
    records = [r for r in records if r]
    if not records:
        return None
    out: dict[str, Any] = {}
    for cam in records[0]:
        eps = [r[cam] for r in records]
        frames = np.array([e["frames"] for e in eps], dtype=np.float64)
        within = [e["policy"]["within_episode"] for e in eps if e["policy"]["within_episode"] is not None]
        means = np.array([e["mean_px"] for e in eps])  # (E, K, 2)
        agg = {"episodes": len(eps), "frames": int(frames.sum()),
               "within_episode": float(np.mean(within)) if within else None,
               "across_episodes": float(np.mean(means.std(axis=0))) / size if len(eps) > 1 else None}
        for kind in ("policy", *BASELINES):
            has = [(e[kind], f) for e, f in zip(eps, frames) if kind in e]  # records from before "still" lack it
            if not has:
                continue
            agg[kind] = {}
            for key in (k for k in has[0][0] if k != "within_episode"):
                pairs = [(d[key], f) for d, f in has if d.get(key) is not None]
                agg[kind][key] = sum(v * f for v, f in pairs) / sum(f for _, f in pairs) if pairs else None
        out[cam] = agg
    return out


def _task_of(path: Any) -> tuple[str, int]:
    """(suite, task id) of a generated ``<task>_demo.hdf5`` file, from the BDDL file it was made from."""
    from pathlib import Path

    import h5py

    from ..envs.libero.factory import get_suite

    with h5py.File(path, "r") as f:
        bddl = Path(str(f["data"].attrs["bddl_file_name"]))
    suite = get_suite(bddl.parent.name)
    names = [suite.get_task(i).name for i in range(suite.get_num_tasks())]
    if bddl.stem not in names:
        raise ValueError(f"{path}: its task {bddl.stem!r} is not in suite {bddl.parent.name!r}")
    return bddl.parent.name, names.index(bddl.stem)


def demo_frames(policy: Any, data: Any, demos_per_task: int = 2, frames_per_demo: int = 8, tasks: int | None = None,
                images: bool = False) -> dict[str, list[dict[str, Any]]]:
    """The per-frame material :func:`points_on_demos` measures, per camera one dict per demo: ``points (T, K, 2)``
    (the policy's points in pixels), ``targets (T, M, 2)`` and ``masks (T, H, W)`` as :func:`points_report` takes
    them, plus ``file`` (the task file's name), ``demo`` (its index), ``steps (T,)`` (the frames' time steps),
    ``instruction``, ``target_names`` and, with ``images=True``, the upright frames ``images (T, H, W, 3)`` uint8.
    Frames: ``frames_per_demo`` evenly spaced ones of the first ``demos_per_task`` demos of each task file under
    ``data`` (the first ``tasks`` files)."""
    import torch

    from ..envs.libero.dataset import find_demo_files, read_demo
    from ..envs.libero.factory import make_env
    from ..envs.libero.suites import CAMERA_KEYS, state_vector
    from ..envs.libero.targets import target_mask, target_names, target_pixels

    c = policy.config
    if c.reducer == "dense":
        raise ValueError("a dense policy has no sampling points to measure")
    files = find_demo_files(data)[:tasks]
    per_cam: dict[str, list[dict[str, Any]]] = {cam: [] for cam in c.cameras}
    for path in files:
        suite, task = _task_of(path)
        env = make_env(suite, task, image_size=c.image_size, cameras=c.cameras)
        try:
            for i in range(demos_per_task):
                demo = read_demo(path, i)
                steps = np.linspace(0, len(demo["actions"]) - 1, frames_per_demo).round().astype(int)
                frames = {cam: np.ascontiguousarray(demo[CAMERA_KEYS[cam]][steps]) for cam in c.cameras}
                kept = {cam: frames[cam].copy() for cam in c.cameras} if images else {}
                images_t = {cam: torch.from_numpy(frames[cam]).permute(0, 3, 1, 2) for cam in c.cameras}
                state = torch.from_numpy(state_vector(demo)[steps].astype(np.float32))
                with torch.no_grad():
                    coords = policy(images_t, state, [demo["instruction"]] * len(steps)).coords  # (T, cams, K, 2)
                if coords is None:
                    raise ValueError(f"reducer {c.reducer!r} reports no sampling points")
                pix = policy_pixels(policy, coords)
                targets = {cam: [] for cam in c.cameras}
                masks = {cam: [] for cam in c.cameras}
                for t in steps:
                    env.set_state(demo["states"][t])
                    for cam in c.cameras:
                        targets[cam].append(target_pixels(env, cam))
                        masks[cam].append(target_mask(env, cam))
                names = target_names(env)
                for j, cam in enumerate(c.cameras):
                    ep = {"points": pix[:, j], "targets": np.stack(targets[cam]), "masks": np.stack(masks[cam]),
                          "file": path.name, "demo": i, "steps": steps, "instruction": demo["instruction"],
                          "target_names": names}
                    if images:
                        ep["images"] = kept[cam]
                    per_cam[cam].append(ep)
        finally:
            env.close()
    return per_cam


def points_on_demos(policy: Any, data: Any, demos_per_task: int = 2, frames_per_demo: int = 8, radius: float = 12.0,
                    tasks: int | None = None, seed: int = 0) -> dict[str, Any]:
    """:func:`points_report` per camera of ``policy`` (a GridS-like :class:`~grids_vla.policy.GridSVLAPolicy`) on
    frames of generated demos: ``frames_per_demo`` evenly spaced frames of the first ``demos_per_task`` demos of each
    task file under ``data`` (the first ``tasks`` files). Targets come from the demos' saved simulator states, so no
    rollout is needed; each demo counts as one episode for mobility. The frames themselves: :func:`demo_frames`."""
    c = policy.config
    per_cam = demo_frames(policy, data, demos_per_task, frames_per_demo, tasks)
    return {cam: points_report(eps, c.image_size, radius, seed, c.grid) for cam, eps in per_cam.items()}
