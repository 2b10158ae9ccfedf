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
"seeing" GridS has to beat.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["baseline_points", "mobility", "on_target", "points_report"]


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
    return out
