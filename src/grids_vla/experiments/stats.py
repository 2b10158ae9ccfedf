"""Statistics of evaluation outcomes: binomial intervals, the paired comparison of two runs, and the difference of
two variants over several training seeds.

A policy's success rate varies from one training seed to the next by more than the episodes of one evaluation can
show (on libero_object, GridS-16 scored 84 and 69 of 100 on two seeds). :func:`seed_bootstrap_diff` therefore gives
the difference of two variants an interval that resamples the seeds as well as the episodes; Wilson intervals and
McNemar tests treat every episode as independent and only describe the seeds that were run.

This module uses the standard library only (no numpy, torch or simulator).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Hashable, Iterable, Mapping, Sequence

__all__ = ["Z95", "wilson_interval", "mcnemar_exact", "paired_outcomes", "paired_successes", "mcnemar_pooled",
           "seed_bootstrap_diff", "seed_bootstrap_mean"]

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


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


def paired_successes(a: list[dict], b: list[dict]) -> tuple[list[bool], list[bool]]:
    """Two evaluations' outcomes paired by ``(task_id, init_state)``, in that key's order: ``(a's, b's)``.

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
    keys = sorted(ia)
    return [ia[k] for k in keys], [ib[k] for k in keys]


def paired_outcomes(a: list[dict], b: list[dict]) -> dict[str, int]:
    """Pair two evaluations' episodes by ``(task_id, init_state)``; count both / only a / only b / neither succeeding.

    Both must hold the same episodes (the same tasks and init states), else the pairing would be silently partial.
    """
    pairs = list(zip(*paired_successes(a, b)))
    return {"both": sum(x and y for x, y in pairs), "only_a": sum(x and not y for x, y in pairs),
            "only_b": sum(y and not x for x, y in pairs), "neither": sum(not (x or y) for x, y in pairs)}


def mcnemar_pooled(counts: Iterable[Mapping[str, int]]) -> tuple[dict[str, int], float]:
    """Sum :func:`paired_outcomes` counts (e.g. one per training seed) and test the pooled discordant pairs with
    :func:`mcnemar_exact`: ``(summed counts, p)``."""
    total = {"both": 0, "only_a": 0, "only_b": 0, "neither": 0}
    for c in counts:
        for key in total:
            total[key] += int(c[key])
    return total, mcnemar_exact(total["only_a"], total["only_b"])


def _outcomes(name: str, runs: Mapping[Hashable, Sequence[bool]]) -> dict[Hashable, list[int]]:
    """Validated copy of one variant's outcomes per seed as 0/1 ints."""
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError(f"{name} must be a non-empty mapping of seed -> list of episode outcomes")
    out = {}
    for seed, episodes in runs.items():
        if isinstance(episodes, str | bytes) or not isinstance(episodes, Sequence) or not episodes:
            raise ValueError(f"{name}[{seed!r}] must be a non-empty list of episode outcomes")
        bad = [x for x in episodes if not (isinstance(x, bool) or (type(x) is int and x in (0, 1)))]
        if bad:
            raise ValueError(f"{name}[{seed!r}] holds {bad[0]!r}; outcomes must be True/False (or 1/0)")
        out[seed] = [int(x) for x in episodes]
    return out


def _check_bootstrap(n_boot: int, level: float, rng_seed: int) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if isinstance(rng_seed, bool) or not isinstance(rng_seed, int):
        raise ValueError(f"rng_seed must be an int, got {rng_seed!r}")


def _percentile_interval(estimate: float, resampled: list[float], level: float) -> tuple[float, float, float]:
    """``(estimate, lo, hi)``: the central ``level`` percentile interval of the resampled statistics."""
    ordered = sorted(resampled)
    alpha = 1 - level
    return estimate, _quantile(ordered, alpha / 2), _quantile(ordered, 1 - alpha / 2)


def _seed_order(seeds: Iterable[Hashable]) -> list[Hashable]:
    """Seeds in a fixed order (a resample must not depend on the mapping's insertion order)."""
    return sorted(seeds, key=lambda s: (type(s).__name__, s))


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between order statistics (position ``q * (n - 1)``)."""
    pos = q * (len(ordered) - 1)
    i = math.floor(pos)
    j = min(i + 1, len(ordered) - 1)
    return ordered[i] + (ordered[j] - ordered[i]) * (pos - i)


class _Binomial:
    """Draws from Binomial(n, hits / total) by inverting its CDF (tables built once per ``(n, hits, total)``).

    Resampling ``n`` episodes with replacement and counting the successes is exactly a binomial draw with the
    observed rate, so one uniform number replaces ``n`` of them; a resample of episode pairs is two such draws.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.tables: dict[tuple[int, int, int], list[float]] = {}

    def draw(self, n: int, hits: int, total: int) -> int:
        if n == 0 or hits == 0:
            return 0
        if hits == total:
            return n
        key = (n, hits, total)
        cdf = self.tables.get(key)
        if cdf is None:
            log_p, log_q = math.log(hits / total), math.log1p(-hits / total)
            acc, cdf = 0.0, []
            for k in range(n + 1):
                acc += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                                + k * log_p + (n - k) * log_q)
                cdf.append(acc)
            cdf[-1] = 1.0
            self.tables[key] = cdf
        return bisect.bisect_right(cdf, self.rng.random())


def seed_bootstrap_diff(a: Mapping[Hashable, Sequence[bool]], b: Mapping[Hashable, Sequence[bool]], paired: bool,
                        n_boot: int = 2000, rng_seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Difference of success rates ``a - b`` (pooled over seeds and episodes) with a ``level`` interval that accounts
    for seed-to-seed spread: ``(diff, lo, hi)`` as fractions.

    ``a`` and ``b`` map a training seed to that run's episode outcomes. Each of ``n_boot`` resamples draws the seeds
    with replacement (as many as there are), then, for each drawn seed, its episodes with replacement; the interval
    is the percentile interval of the resampled pooled differences. ``paired=True`` needs the same seeds in both, with
    episode ``i`` of ``a[s]`` and of ``b[s]`` played from the same start (same task and init state): a drawn seed
    then counts for both variants and its episode pairs are resampled jointly, which removes the part of the spread
    that the two variants share. ``paired=False`` resamples each variant's seeds and episodes independently (the
    seeds may differ).

    Two-stage resampling counts the episodes' own noise about twice (it is already part of the spread between seeds),
    while resampling S seeds sees only (S - 1) / S of their true spread. On simulated studies of 5 seeds x 40
    episodes (400 each) the 95 % interval held the true difference in 98 % of them when the seeds did not differ,
    93-98 % with seed rates spread by +-0.1 and 89-93 % by +-0.2 (paired-unpaired); tests/test_stats.py checks the
    middle case loosely. With one seed the interval cannot see seed spread at all and describes that seed only.
    Deterministic for a given ``rng_seed``.
    """
    xa, xb = _outcomes("a", a), _outcomes("b", b)
    _check_bootstrap(n_boot, level, rng_seed)
    rng = random.Random(rng_seed)
    binom = _Binomial(rng)
    stats = []
    if paired:
        if xa.keys() != xb.keys():
            raise ValueError(f"paired comparison needs the same seeds in a and b, got {_seed_order(xa)} and "
                             f"{_seed_order(xb)}")
        uneven = [s for s in xa if len(xa[s]) != len(xb[s])]
        if uneven:
            s = uneven[0]
            raise ValueError(f"paired comparison needs as many episodes in a as in b per seed; seed {s!r} has "
                             f"{len(xa[s])} and {len(xb[s])}")
        seeds = _seed_order(xa)
        # per seed: episodes, pairs only a succeeded in, pairs only b succeeded in (the rest add 0 to a - b)
        cells = {s: (len(xa[s]), sum(x > y for x, y in zip(xa[s], xb[s])), sum(y > x for x, y in zip(xa[s], xb[s])))
                 for s in seeds}
        n_all = sum(c[0] for c in cells.values())
        estimate = sum(c[1] - c[2] for c in cells.values()) / n_all
        for _ in range(n_boot):
            total, n = 0, 0
            for s in rng.choices(seeds, k=len(seeds)):
                m, only_a, only_b = cells[s]
                up = binom.draw(m, only_a, m)  # resampled "only a" pairs, then "only b" among the other pairs
                total += up - binom.draw(m - up, only_b, m - only_a)
                n += m
            stats.append(total / n)
    else:
        def counts(x: dict[Hashable, list[int]]) -> tuple[list[Hashable], dict[Hashable, tuple[int, int]]]:
            return _seed_order(x), {s: (len(v), sum(v)) for s, v in x.items()}

        (seeds_a, ca), (seeds_b, cb) = counts(xa), counts(xb)
        estimate = (sum(c[1] for c in ca.values()) / sum(c[0] for c in ca.values())
                    - sum(c[1] for c in cb.values()) / sum(c[0] for c in cb.values()))

        def rate(cells: dict[Hashable, tuple[int, int]], seeds: list[Hashable]) -> float:
            total, n = 0, 0
            for s in rng.choices(seeds, k=len(seeds)):
                m, hits = cells[s]
                total += binom.draw(m, hits, m)
                n += m
            return total / n

        for _ in range(n_boot):
            stats.append(rate(ca, seeds_a) - rate(cb, seeds_b))
    return _percentile_interval(estimate, stats, level)


def seed_bootstrap_mean(values: Mapping[Hashable, Sequence[tuple[float, float]]], n_boot: int = 2000,
                        rng_seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Weighted mean of per-episode values pooled over seeds and episodes, with the seed-then-episode bootstrap of
    :func:`seed_bootstrap_diff`: ``(mean, lo, hi)``.

    ``values`` maps a training seed to its episodes' ``(value, weight)`` pairs, e.g. the share of a policy's points on
    the task minus the fixed grid's on the same frames, weighted by the episode's frames. Each resample draws the seeds
    with replacement, then each drawn seed's episodes with replacement. Deterministic for a given ``rng_seed``.
    """
    if not isinstance(values, Mapping) or not values:
        raise ValueError("values must be a non-empty mapping of seed -> list of (value, weight) pairs")
    cells = {}
    for seed, episodes in values.items():
        if isinstance(episodes, str | bytes) or not isinstance(episodes, Sequence) or not episodes:
            raise ValueError(f"values[{seed!r}] must be a non-empty list of (value, weight) pairs")
        pairs = []
        for pair in episodes:
            ok = isinstance(pair, tuple | list) and len(pair) == 2 and all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in pair)
            if not ok or pair[1] <= 0:
                raise ValueError(f"values[{seed!r}] holds {pair!r}; expected a (finite value, weight > 0) pair")
            pairs.append((float(pair[0]) * float(pair[1]), float(pair[1])))
        cells[seed] = pairs
    _check_bootstrap(n_boot, level, rng_seed)
    rng = random.Random(rng_seed)
    seeds = _seed_order(cells)
    estimate = sum(vw for p in cells.values() for vw, _ in p) / sum(w for p in cells.values() for _, w in p)
    stats = []
    for _ in range(n_boot):
        total, weight = 0.0, 0.0
        for s in rng.choices(seeds, k=len(seeds)):
            for vw, w in rng.choices(cells[s], k=len(cells[s])):
                total += vw
                weight += w
        stats.append(total / weight)
    return _percentile_interval(estimate, stats, level)
