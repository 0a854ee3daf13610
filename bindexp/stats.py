"""Confidence intervals, defined once for every runner. numpy only."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for a proportion; (nan, nan) when n == 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high): normal-approximation 95% interval of the mean; nan bounds when n < 2."""
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    half = z * float(data.std(ddof=1)) / math.sqrt(data.size)
    return mean, mean - half, mean + half


def moment_interval(total, total_sq, count, z: float = Z95):
    """Elementwise (mean, low, high) from running sums, count and sums of squares (numpy arrays).

    The same normal-approximation interval as `mean_interval`, for streamed data.
    """
    total, total_sq, count = (np.asarray(a, dtype=float) for a in (total, total_sq, count))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        variance = (total_sq - count * mean**2) / (count - 1)
        half = z * np.sqrt(np.clip(variance, 0, None) / count)
    half = np.where(count >= 2, half, np.nan)
    return mean, mean - half, mean + half
