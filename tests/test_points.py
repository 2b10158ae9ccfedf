"""Mobility and on-target metrics of sampling points (pure numpy, no simulator)."""

import numpy as np
import pytest

from grids_vla.experiments.points import baseline_points, mobility, on_target, points_report


def test_static_points_have_zero_mobility_and_moving_points_do_not():
    static = [np.full((5, 3, 2), 10.0), np.full((4, 3, 2), 10.0)]
    assert mobility(static, 100) == {"within_episode": 0.0, "across_episodes": 0.0}
    # each point alternates between x=0 and x=20 inside an episode: std 10 px on x, 0 on y -> mean 5 px = 0.05
    moving = np.zeros((4, 3, 2))
    moving[1::2, :, 0] = 20.0
    assert mobility([moving], 100)["within_episode"] == pytest.approx(0.05)
    # episode means differ by 20 px in y between two episodes: std 10 on y, 0 on x -> 5 px
    a, b = np.zeros((3, 2, 2)), np.zeros((3, 2, 2))
    b[..., 1] = 20.0
    assert mobility([a, b], 100)["across_episodes"] == pytest.approx(0.05)


def test_on_target_counts_points_within_radius_and_on_mask():
    points = np.array([[[10.0, 10.0], [50.0, 50.0]]])  # T=1, K=2
    targets = np.array([[[12.0, 10.0], [np.inf, np.inf]]])  # one visible target, one out of view
    masks = np.zeros((1, 64, 64), dtype=bool)
    masks[0, 50, 50] = True  # pixel (row 50, col 50) holds a target
    out = on_target(points, targets, radius=3.0, masks=masks)
    assert out["within_radius"] == 0.5
    assert out["mean_distance_px"] == pytest.approx((2.0 + np.hypot(38.0, 40.0)) / 2)
    assert out["on_mask"] == 0.5
    with pytest.raises(ValueError, match="share T"):
        on_target(points, np.zeros((2, 1, 2)), 3.0)


def test_baselines_and_report():
    fixed = baseline_points("fixed-grid", 4, 3, 128, grid=(16, 16))
    assert fixed.shape == (3, 4, 2) and np.all(fixed == fixed[0]) and len({tuple(p) for p in fixed[0]}) == 4
    rand = baseline_points("random", 4, 3, 128, seed=1)
    assert np.array_equal(rand, baseline_points("random", 4, 3, 128, seed=1)) and not np.all(rand == rand[0])
    with pytest.raises(ValueError, match="fixed-grid"):
        baseline_points("grid", 4, 3, 128)
    # a policy whose single point sits on the single target every frame beats both baselines
    targets = np.random.default_rng(7).uniform(0, 128, size=(20, 1, 2))  # not the baseline seed
    rep = points_report([{"points": targets.copy(), "targets": targets}], size=128, radius=4.0, grid=(16, 16))
    assert rep["policy"]["within_radius"] == 1.0 and rep["policy"]["within_episode"] > 0.1
    assert rep["fixed-grid"]["within_radius"] < 0.5 and rep["random"]["within_radius"] < 0.5
    assert rep["still"]["within_radius"] < 0.5  # held at its mean position it would miss the moving target


def test_held_still_baseline_credits_following_not_a_good_spot():
    """``still`` holds each point at its mean over the episode: a point that follows its target beats it, a point
    parked on a still target ties with it, and a point that jitters around a still target does worse moving."""
    t = np.arange(10, dtype=np.float64)
    moving_target = np.stack([10 + 8 * t, np.full(10, 64.0)], axis=-1)[:, None, :]  # (T, 1, 2)
    follow = points_report([{"points": moving_target.copy(), "targets": moving_target}], 128, radius=4.0)
    assert follow["policy"]["within_radius"] == 1.0 and follow["still"]["within_radius"] == 0.2
    still_target = np.full((10, 1, 2), 64.0)
    parked = points_report([{"points": still_target.copy(), "targets": still_target}], 128, radius=4.0)
    assert parked["policy"]["within_radius"] == parked["still"]["within_radius"] == 1.0
    jitter = still_target + np.array([[[6.0, 0.0]], [[-6.0, 0.0]]] * 5)
    shaky = points_report([{"points": jitter, "targets": still_target}], 128, radius=4.0)
    assert shaky["policy"]["within_radius"] == 0.0 and shaky["still"]["within_radius"] == 1.0
    two = points_report([{"points": moving_target.copy(), "targets": moving_target},
                         {"points": jitter, "targets": still_target}], 128, radius=4.0)
    assert two["still"]["within_radius"] == pytest.approx((2 + 10) / 20)  # each episode held at its own mean


def test_aggregate_over_episode_records():
    from grids_vla.experiments.points import aggregate_points

    def rec(frames, within, mean_x, share):
        stats = {"within_radius": share, "mean_distance_px": 10.0, "on_mask": share}
        return {"cam": {"frames": frames, "mean_px": [[mean_x, 0.0]],
                        "policy": {"within_episode": within, **stats}, "fixed-grid": stats, "random": stats}}

    agg = aggregate_points([rec(1, None, 0.0, 1.0), rec(3, 0.2, 20.0, 0.0), None], size=100)["cam"]
    assert agg["episodes"] == 2 and agg["frames"] == 4
    assert agg["within_episode"] == 0.2  # the one-call episode has no within-episode spread
    assert agg["across_episodes"] == pytest.approx(0.05)  # mean x 0 vs 20 px: std 10 on x, 0 on y -> 5 px
    assert agg["policy"]["within_radius"] == pytest.approx(0.25)  # frame-weighted: 1 of 4 calls
    assert "still" not in agg  # records written before the held-still baseline existed
    newer = rec(1, None, 0.0, 1.0)
    newer["cam"]["still"] = {"within_radius": 0.5, "mean_distance_px": 10.0, "on_mask": None}
    agg = aggregate_points([newer, rec(3, 0.2, 20.0, 0.0)], size=100)["cam"]
    assert agg["still"] == {"within_radius": 0.5, "mean_distance_px": 10.0, "on_mask": None}  # over those that have it
    assert aggregate_points([None, {}], 100) is None


def test_every_points_benchmark_variant_is_a_valid_policy_config():
    """benchmarks/points/points.py's variants are GridSVLAConfig overrides (and TrainConfig ones under "train"): each
    builds (a typo fails here, not after a run's data loading) and each is a distinct configuration."""
    import importlib.util
    from pathlib import Path

    from grids_vla.policy import GridSVLAConfig

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "points" / "points.py"
    spec = importlib.util.spec_from_file_location("points_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from grids_vla.experiments.train import TrainConfig

    configs = []
    for name in mod.VARIANTS:
        model, train = mod.split_variant(name)
        configs.append((GridSVLAConfig(k=16, **model).to_dict(), TrainConfig(**train).to_dict()))
    assert len({repr([sorted(m.items()), sorted(t.items())]) for m, t in configs}) == len(configs)
    assert mod.split_variant("pooled-l2-start16x6")[1] == {
        "start_frames": 16, "start_weight": 6}
