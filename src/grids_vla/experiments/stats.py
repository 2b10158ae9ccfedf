"""Statistics of evaluation outcomes: binomial intervals and the paired comparison of two runs.

This module uses the standard library only (no numpy, torch or simulator).
"""

from __future__ import annotations

import math

__all__ = ["Z95", "wilson_interval", "mcnemar_exact", "paired_outcomes"]

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
