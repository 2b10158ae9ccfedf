"""The statistics behind the evaluation reports (Wilson interval, exact McNemar test, paired episodes).

They need only the standard library, so this module imports nothing optional and runs in every environment (it used
to live in the LIBERO-gated tests/test_eval.py and vanished without the simulator).
"""

from __future__ import annotations

import math

import pytest

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
