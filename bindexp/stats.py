"""Confidence intervals, defined once for every runner. numpy only (no scipy).

- a mean over a few runs or pairs: Student-t interval (`t_quantile`; with 2 seeds the 95%
  multiplier is 12.71, not 1.96), `mean_interval` for a list, `sample_interval` along an axis,
  `RunningMoments` for values that stream in (Welford / Chan updates: stable when the mean is
  large and the spread tiny, where sums of squares cancel);
- a proportion (accuracy, IIA: 0/1 outcomes): Wilson score interval (`wilson_interval`,
  `wilson_bounds` elementwise);
- a decision against a threshold from an interval, never from a point estimate (`decide`,
  `decisions` elementwise): CARRIES when the Wilson lower bound reaches the threshold, DOES_NOT
  when the upper bound lies below it, UNDETERMINED otherwise (5/10 at 0.5 is undetermined);
- a bounded quantity's t interval clipped to its range (`clip_to_range`, which says whether it
  clipped); `display` rounds a number for printing (3 significant digits; files keep every digit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054
INTERVAL_NOTE = "95% Student-t interval of the mean (over runs or pairs); Wilson for proportions"


# ---------------------------------------------------------------- Student t


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for numerator in (even, odd):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (bisection on `t_cdf`)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def t_multiplier(n: int) -> float:
    """Half-width of a 95% interval in standard errors for n values: t(0.975, n - 1); nan when n < 2."""
    return t_quantile(0.975, n - 1) if n >= 2 else math.nan


def _t_multipliers(count: np.ndarray) -> np.ndarray:
    """`t_multiplier` elementwise over an array of counts."""
    count = np.asarray(count)
    out = np.full(count.shape, np.nan)
    for n in np.unique(count):
        if n >= 2:
            out[count == n] = t_multiplier(int(n))
    return out


# ---------------------------------------------------------------- means


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% Student-t interval of the mean, NaNs ignored; nan bounds when n < 2."""
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    half = t_multiplier(data.size) * float(data.std(ddof=1)) / math.sqrt(data.size)
    return mean, mean - half, mean + half


def moments_interval(count, mean, m2):
    """Elementwise (mean, low, high) from a count, a mean and M2 (the sum of squared deviations):
    the 95% Student-t interval; nan bounds where count < 2."""
    count, mean, m2 = (np.asarray(a, dtype=float) for a in (count, mean, m2))
    with np.errstate(invalid="ignore", divide="ignore"):
        half = _t_multipliers(count) * np.sqrt(np.clip(m2, 0, None) / (count - 1) / count)
        mean = np.where(count > 0, mean, np.nan)
    half = np.where(count >= 2, half, np.nan)
    return mean, mean - half, mean + half


def sample_interval(values, axis: int = 0):
    """Elementwise (mean, low, high, count) along `axis`, NaNs ignored: the 95% Student-t interval."""
    values = np.asarray(values, dtype=float)
    present = ~np.isnan(values)
    count = present.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(present, values, 0.0).sum(axis=axis) / count
        deviations = np.where(present, values - np.expand_dims(mean, axis), 0.0)  # two passes: stable
    return (*moments_interval(count, mean, (deviations**2).sum(axis=axis)), count)


class RunningMoments:
    """Count, mean and M2 per cell, updated as values stream in (Welford, merged with Chan's formula);
    NaN marks a cell without a value. Numerically stable where sums of squares are not."""

    def __init__(self, shape: tuple[int, ...] | int = ()):
        self.count = np.zeros(shape)
        self.mean = np.zeros(shape)
        self.m2 = np.zeros(shape)

    def add(self, values) -> None:
        """One value per cell (NaN: none)."""
        values = np.asarray(values, dtype=float)
        present = ~np.isnan(values)
        count = self.count + present
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = np.where(present, values - self.mean, 0.0)
            mean = self.mean + np.where(present, delta / np.where(count > 0, count, 1), 0.0)
        self.m2 = self.m2 + np.where(present, delta * np.where(present, values - mean, 0.0), 0.0)
        self.count, self.mean = count, mean

    def merge(self, other: RunningMoments) -> None:
        """Fold in another accumulator of the same shape (Chan et al.'s parallel update)."""
        count = self.count + other.count
        safe = np.where(count > 0, count, 1)
        delta = other.mean - self.mean
        self.m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / safe
        self.mean = np.where(count > 0, self.mean + delta * other.count / safe, 0.0)
        self.count = count

    @property
    def variance(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count >= 2, self.m2 / (self.count - 1), np.nan)

    def interval(self):
        """Elementwise (mean, low, high): the 95% Student-t interval of each cell's mean."""
        return moments_interval(self.count, self.mean, self.m2)


def moment_interval(total, total_sq, count):
    """Elementwise (mean, low, high) from running sums and sums of squares, with t multipliers.

    Kept for callers that hold sums; sums of squares lose precision when the mean is large next
    to the spread: stream into `RunningMoments` instead.
    """
    total, total_sq, count = (np.asarray(a, dtype=float) for a in (total, total_sq, count))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        m2 = total_sq - count * mean**2
    return moments_interval(count, mean, m2)


# ---------------------------------------------------------------- proportions


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for a proportion; (nan, nan) when n == 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def wilson_bounds(successes, n, z: float = Z95):
    """`wilson_interval` elementwise over arrays of successes and counts; nan where n == 0."""
    successes, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(np.clip(p * (1 - p), 0, None) / n + z * z / (4 * n * n)) / denom
        low = np.clip(np.minimum(p, centre - half), 0.0, None)
        high = np.clip(np.maximum(p, centre + half), None, 1.0)
    empty = n == 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


# ---------------------------------------------------------------- decisions by intervals

CARRIES, DOES_NOT, UNDETERMINED = "carries", "does not", "undetermined"
DECISION_RULE = ("Wilson 95% interval against the threshold: 'carries' when its lower bound >= threshold, "
                 "'does not' when its upper bound < threshold, else 'undetermined'")


def decide(successes: int, n: int, threshold: float) -> str:
    """CARRIES, DOES_NOT or UNDETERMINED for `successes` out of `n` against `threshold`, by the
    95% Wilson interval (`DECISION_RULE`); UNDETERMINED when n == 0."""
    if n == 0:
        return UNDETERMINED
    low, high = wilson_interval(successes, n)
    if low >= threshold:
        return CARRIES
    return DOES_NOT if high < threshold else UNDETERMINED


def decisions(low, high, threshold: float) -> np.ndarray:
    """`decide` elementwise from arrays of Wilson bounds (NaN bounds: UNDETERMINED)."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    out = np.full(low.shape, UNDETERMINED, dtype=object)
    with np.errstate(invalid="ignore"):
        out[low >= threshold] = CARRIES
        out[high < threshold] = DOES_NOT
    return out


# ---------------------------------------------------------------- bounded quantities and display


def clip_to_range(low, high, bounds: tuple[float | None, float | None]):
    """(low, high, clipped): interval bounds clipped to `bounds` ((min, max), None: unbounded);
    `clipped` is True where either bound was moved (NaN bounds stay NaN)."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    floor, ceiling = bounds
    with np.errstate(invalid="ignore"):
        moved = np.zeros(low.shape, dtype=bool)
        if floor is not None:
            moved |= low < floor
            low = np.where(low < floor, floor, low)
        if ceiling is not None:
            moved |= high > ceiling
            high = np.where(high > ceiling, ceiling, high)
    return low, high, moved


def display(value, digits: int = 3):
    """`value` rounded to `digits` significant digits for printing (0.049999999999999996 -> 0.05);
    ints, None, NaN, text and the like come back as they are; lists and dicts are walked."""
    if isinstance(value, dict):
        return {key: display(item, digits) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(display(item, digits) for item in value)
    if isinstance(value, (bool, int)) or not isinstance(value, (float, np.floating)):
        return value
    value = float(value)
    if not math.isfinite(value) or value == 0.0:
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))
