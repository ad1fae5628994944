"""Intervals for every rate and mean a report prints: Wilson's score interval for a proportion, a normal interval
for a mean, and the wording of a rate with its n (a rate from fewer than 10 positives says so)."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054
FEW = 10   # a rate from fewer positives than this is flagged


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of k successes in n trials ((0, 1) when n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite values with a normal 95% interval (nan without values)."""
    vals = [float(v) for v in values if math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    half = z * sd / math.sqrt(len(vals))
    return mean, mean - half, mean + half


def rate_text(k: int, n: int) -> str:
    """'3 of 40 (7.5%, 95% CI 2.6–19.9%)', flagged when k < 10."""
    if n == 0:
        return "0 of 0"
    lo, hi = wilson(k, n)
    few = f"; fewer than {FEW} positives" if k < FEW else ""
    return f"{k} of {n} ({100 * k / n:.1f}%, 95% CI {100 * lo:.1f}–{100 * hi:.1f}%{few})"
