"""The statistics behind the evaluation reports (Wilson interval, exact McNemar test, paired episodes, the seed
bootstrap of a difference between variants).

They need only the standard library, so this module imports nothing optional and runs in every environment (it used
to live in the LIBERO-gated tests/test_eval.py and vanished without the simulator).
"""

from __future__ import annotations

import math
import random

import pytest

from grids_vla.experiments.stats import mcnemar_pooled, paired_successes, seed_bootstrap_diff, seed_bootstrap_mean
from grids_vla.policy.evaluation import mcnemar_exact, paired_outcomes, wilson_interval

Z95 = 1.959963984540054


def test_mcnemar_exact_known_values() -> None:
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # 5 of 5 discordant pairs one way
    assert mcnemar_exact(19, 12) == mcnemar_exact(12, 19) == pytest.approx(0.28104, abs=1e-5)
    assert mcnemar_exact(3, 17) == pytest.approx(0.0025768, abs=1e-7)  # binomial test of 3/20 at p = 0.5
    assert mcnemar_exact(30, 34) == pytest.approx(0.70798, abs=1e-5)  # the committed GridS-16 vs dense pairs
    assert mcnemar_exact(0, 0) == mcnemar_exact(4, 4) == 1.0
    with pytest.raises(ValueError, match="discordant"):
        mcnemar_exact(-1, 2)
    with pytest.raises(ValueError, match="discordant"):
        mcnemar_exact(2, -1)


def test_mcnemar_exact_is_the_two_sided_binomial_test() -> None:
    """Against the textbook definition: the probability, under Binomial(n, 1/2), of every split of the discordant pairs
    no more likely than the one observed."""
    for only_a in range(13):
        for only_b in range(13):
            n = only_a + only_b
            pmf = [math.comb(n, k) / 2**n for k in range(n + 1)]
            expected = sum(p for p in pmf if p <= pmf[only_a] * (1 + 1e-12))
            assert mcnemar_exact(only_a, only_b) == pytest.approx(min(1.0, expected), rel=1e-12), (only_a, only_b)


def test_paired_outcomes_pairs_by_task_and_init_state() -> None:
    def eps(wins: list[bool]) -> list[dict]:
        return [{"task_id": i // 2, "init_state": i % 2, "success": w} for i, w in enumerate(wins)]

    a, b = eps([True, True, False, False, True]), eps([True, False, True, False, False])
    assert paired_outcomes(a, b[::-1]) == {"both": 1, "only_a": 2, "only_b": 1, "neither": 1}  # order-free
    assert paired_outcomes(b, a) == {"both": 1, "only_a": 1, "only_b": 2, "neither": 1}
    with pytest.raises(ValueError, match="different episodes: 1 only in a"):
        paired_outcomes(a, b[:4])
    with pytest.raises(ValueError, match="twice"):
        paired_outcomes(a + a[:1], b)
    # same count, other episodes: task 2 init 0 in a, task 2 init 1 in b
    moved = b[:4] + [{"task_id": 2, "init_state": 1, "success": False}]
    with pytest.raises(ValueError, match="1 only in a, 1 only in b"):
        paired_outcomes(a, moved)


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.7225, abs=1e-4) and hi == 1.0
    lo, hi = wilson_interval(5, 10)
    assert lo + hi == pytest.approx(1.0) and lo == pytest.approx(0.2366, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)


def test_wilson_bounds_are_where_the_score_test_is_at_its_limit() -> None:
    """Each bound p solves (s/n - p)^2 = z^2 p (1 - p) / n (the definition of the Wilson interval)."""
    for n in (1, 2, 7, 50, 200):
        for s in range(n + 1):
            lo, hi = wilson_interval(s, n)
            assert 0.0 <= lo < s / n < hi <= 1.0 or (s in (0, n) and lo <= s / n <= hi)
            for p in (lo, hi):
                assert (s / n - p) ** 2 == pytest.approx(Z95**2 * p * (1 - p) / n, abs=1e-12), (s, n, p)
    assert wilson_interval(157, 200) == pytest.approx((0.7229769265100339, 0.8362812374549242))  # success.json


def test_paired_successes_orders_by_task_and_init_state() -> None:
    a = [{"task_id": 1, "init_state": 0, "success": True}, {"task_id": 0, "init_state": 1, "success": False},
         {"task_id": 0, "init_state": 0, "success": 1}]
    b = [{"task_id": 0, "init_state": 0, "success": False}, {"task_id": 1, "init_state": 0, "success": False},
         {"task_id": 0, "init_state": 1, "success": True}]
    assert paired_successes(a, b) == ([True, False, True], [False, True, False])
    with pytest.raises(ValueError, match="different episodes"):
        paired_successes(a, b[:2])


def test_mcnemar_pooled_sums_the_seeds() -> None:
    seeds = [{"both": 65, "only_a": 19, "only_b": 12, "neither": 4}, {"both": 58, "only_a": 11, "only_b": 22,
                                                                      "neither": 9}]
    total, p = mcnemar_pooled(seeds)
    assert total == {"both": 123, "only_a": 30, "only_b": 34, "neither": 13}  # the committed GridS-16 vs dense pairs
    assert p == pytest.approx(0.70798, abs=1e-5)
    assert mcnemar_pooled([]) == ({"both": 0, "only_a": 0, "only_b": 0, "neither": 0}, 1.0)


def _study(rng: random.Random, seeds: int, episodes: int, rate_a: float, rate_b: float, spread: float,
           paired: bool) -> tuple[dict, dict]:
    """Simulated outcomes of two variants: each training seed draws its own success rate, uniform within
    ``spread`` of the variant's; paired episodes share a start whose difficulty is one uniform number."""
    a, b = {}, {}
    for s in range(seeds):
        ra, rb = rate_a + rng.uniform(-spread, spread), rate_b + rng.uniform(-spread, spread)
        if paired:
            u = [rng.random() for _ in range(episodes)]
            a[s], b[s] = [x < ra for x in u], [x < rb for x in u]
        else:
            a[s] = [rng.random() < ra for _ in range(episodes)]
            b[s] = [rng.random() < rb for _ in range(episodes)]
    return a, b


@pytest.mark.parametrize("paired", [True, False])
def test_seed_bootstrap_covers_the_true_difference_about_as_often_as_it_says(paired: bool) -> None:
    """5 seeds x 40 episodes, seed rates spread by +-0.1: the 95 % interval holds the true difference (0.1, the
    difference of the seed-averaged rates) in 85-99.5 % of 200 simulated studies (a loose check: 200 studies resolve
    coverage to about +-3 %). Pooling the same episodes as if they came from one seed covers far less often."""
    rng = random.Random(2026)
    hits = naive = 0
    for i in range(200):
        a, b = _study(rng, 5, 40, 0.7, 0.6, 0.1, paired)
        diff, lo, hi = seed_bootstrap_diff(a, b, paired, n_boot=500, rng_seed=i)
        assert lo <= diff <= hi
        hits += lo <= 0.1 <= hi
    rng = random.Random(7)
    for i in range(100):
        a, b = _study(rng, 5, 40, 0.7, 0.6, 0.25, paired)
        flat_a, flat_b = {0: [x for v in a.values() for x in v]}, {0: [x for v in b.values() for x in v]}
        _, lo, hi = seed_bootstrap_diff(flat_a, flat_b, paired, n_boot=500, rng_seed=i)
        naive += lo <= 0.1 <= hi
    assert 0.85 <= hits / 200 <= 0.995, hits
    assert naive / 100 < 0.85, naive


def test_seed_bootstrap_widens_when_seeds_disagree() -> None:
    """Same pooled rates (a 70 %, b 60 % over 4 x 50 episodes), once with every seed alike, once with a's seeds at
    90 / 50 / 90 / 50 %: the second interval is clearly wider, and both hold the pooled difference."""
    def runs(rates: list[int]) -> dict[int, list[bool]]:
        return {s: [i < r for i in range(50)] for s, r in enumerate(rates)}

    b = runs([30, 30, 30, 30])
    for paired in (True, False):
        d1, lo1, hi1 = seed_bootstrap_diff(runs([35, 35, 35, 35]), b, paired, n_boot=2000, rng_seed=0)
        d2, lo2, hi2 = seed_bootstrap_diff(runs([45, 25, 45, 25]), b, paired, n_boot=2000, rng_seed=0)
        assert d1 == pytest.approx(0.1) and d2 == pytest.approx(0.1)
        assert lo1 < 0.1 < hi1 and lo2 < 0.1 < hi2
        assert hi2 - lo2 > 1.5 * (hi1 - lo1), (paired, (lo1, hi1), (lo2, hi2))


def test_seed_bootstrap_paired_is_narrower_when_the_variants_share_hard_starts() -> None:
    """Episodes that are hard for both variants add nothing to a paired difference."""
    rng = random.Random(3)
    a, b = _study(rng, 4, 60, 0.7, 0.6, 0.0, paired=True)
    _, lo_p, hi_p = seed_bootstrap_diff(a, b, True, n_boot=2000, rng_seed=1)
    _, lo_u, hi_u = seed_bootstrap_diff(a, b, False, n_boot=2000, rng_seed=1)
    assert hi_p - lo_p < hi_u - lo_u


def test_seed_bootstrap_is_deterministic_and_exact_where_nothing_varies() -> None:
    rng = random.Random(5)
    a, b = _study(rng, 3, 30, 0.6, 0.5, 0.1, paired=True)
    first = seed_bootstrap_diff(a, b, True, n_boot=300, rng_seed=11)
    assert seed_bootstrap_diff(dict(reversed(a.items())), b, True, n_boot=300, rng_seed=11) == first  # order-free
    assert len({seed_bootstrap_diff(a, b, True, n_boot=300, rng_seed=r)[1:] for r in range(12, 18)}) > 1  # seed it
    same = {0: [True, False, True], 1: [False, False, True]}
    assert seed_bootstrap_diff(same, same, True, n_boot=50) == (0.0, 0.0, 0.0)  # paired with itself: no spread
    assert seed_bootstrap_diff({0: [True] * 5}, {0: [False] * 5}, False, n_boot=50) == (1.0, 1.0, 1.0)
    diff, lo, hi = seed_bootstrap_diff({0: [1, 1, 0, 1], 1: [1, 0, 0, 0]}, {7: [0, 0, 1]}, False, n_boot=50)
    assert diff == pytest.approx(4 / 8 - 1 / 3) and lo <= diff <= hi  # unpaired: the seeds may differ


@pytest.mark.parametrize("a, b, kwargs, match", [
    ({}, {0: [True]}, {}, "a must be a non-empty mapping"),
    ({0: [True]}, [[True]], {}, "b must be a non-empty mapping"),
    ({0: []}, {0: [True]}, {}, r"a\[0\] must be a non-empty list"),
    ({0: "yes"}, {0: [True]}, {}, r"a\[0\] must be a non-empty list"),
    ({0: [True, 2]}, {0: [True, False]}, {}, "holds 2; outcomes must be True/False"),
    ({0: [True, 0.5]}, {0: [True, False]}, {}, "holds 0.5"),
    ({0: [True], 1: [False]}, {0: [True]}, {"paired": True}, "same seeds in a and b"),
    ({0: [True, False]}, {0: [True]}, {"paired": True}, "seed 0 has 2 and 1"),
    ({0: [True]}, {0: [True]}, {"n_boot": 0}, "n_boot must be a positive int"),
    ({0: [True]}, {0: [True]}, {"n_boot": True}, "n_boot must be a positive int"),
    ({0: [True]}, {0: [True]}, {"level": 1.5}, r"level must be in \(0, 1\)"),
    ({0: [True]}, {0: [True]}, {"rng_seed": 1.0}, "rng_seed must be an int"),
])
def test_seed_bootstrap_rejects_bad_input_in_one_line(a, b, kwargs, match) -> None:
    kwargs = {"paired": False, **kwargs}
    with pytest.raises(ValueError, match=match) as err:
        seed_bootstrap_diff(a, b, **kwargs)
    assert "\n" not in str(err.value)


def test_seed_bootstrap_mean_weighs_episodes_and_widens_with_seed_spread() -> None:
    """The weighted mean of per-episode values (e.g. points on the task minus the fixed grid's, per frame): exact
    where nothing varies, weighted by the episodes' frames, and wider when the seeds disagree."""
    assert seed_bootstrap_mean({0: [(0.25, 10), (0.25, 3)]}, n_boot=50) == (0.25, 0.25, 0.25)
    mean, lo, hi = seed_bootstrap_mean({0: [(1.0, 3), (0.0, 1)]}, n_boot=200)
    assert mean == pytest.approx(0.75) and 0 <= lo < 0.75 < hi <= 1
    alike = {s: [(0.1 + 0.02 * (i % 3 - 1), 20) for i in range(39)] for s in range(3)}
    apart = {s: [(0.1 * s + 0.02 * (i % 3 - 1), 20) for i in range(39)] for s in range(3)}
    m1, lo1, hi1 = seed_bootstrap_mean(alike, n_boot=1000, rng_seed=1)
    m2, lo2, hi2 = seed_bootstrap_mean(apart, n_boot=1000, rng_seed=1)
    assert m1 == pytest.approx(0.1) and m2 == pytest.approx(0.1) and lo1 > 0.09 and hi1 < 0.11
    assert hi2 - lo2 > 10 * (hi1 - lo1) and lo2 < 0.05  # three seeds at 0, 0.1, 0.2: not a clear effect
    assert seed_bootstrap_mean(dict(reversed(apart.items())), n_boot=1000, rng_seed=1) == (m2, lo2, hi2)


@pytest.mark.parametrize("values, kwargs, match", [
    ({}, {}, "values must be a non-empty mapping"),
    ({0: []}, {}, r"values\[0\] must be a non-empty list"),
    ({0: [(0.1, 0)]}, {}, r"holds \(0.1, 0\); expected a \(finite value, weight > 0\) pair"),
    ({0: [(float("nan"), 1)]}, {}, "expected a"),
    ({0: [0.1]}, {}, "holds 0.1"),
    ({0: [(0.1, 1)]}, {"n_boot": 0}, "n_boot must be a positive int"),
])
def test_seed_bootstrap_mean_rejects_bad_input_in_one_line(values, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match) as err:
        seed_bootstrap_mean(values, **kwargs)
    assert "\n" not in str(err.value)
