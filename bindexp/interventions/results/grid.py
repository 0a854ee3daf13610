"""A patching result with named axes: means, 95% intervals and counts per cell.

    grid.axes                 # ("layer", "role") or ("layer", "role", "head") or ("layer", "position")
    grid.labels["role"]       # column labels
    grid.mean["normalized_effect"][layer, column]
    grid.to_frame()           # long format, one row per cell
    grid.plot("normalized_effect")
    Grid.load(folder)         # what bindexp.io.grids.write_grid wrote (grid.safetensors + grid.json)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bindexp.io.grids import read_grid_files
from bindexp.stats import RunningMoments, clip_to_range, wilson_bounds, wilson_interval

# 0/1 per pair (interchange accuracy, a patched prediction leaving the answer, the lens's top-1
# answer, the accuracy left after a knockout): Wilson intervals while every value added is 0 or 1
PROPORTION_METRICS = ("iia", "flip", "top1_answer", "accuracy")
# Bounded metrics (probabilities, their changes, attention weights, ranks): their Student-t
# intervals are clipped to this range, and `grid.info["clipped"]` counts the cells clipped per metric
METRIC_RANGES: dict[str, tuple[float | None, float | None]] = {
    "p_original": (0.0, 1.0), "p_counterfactual": (0.0, 1.0), "p_answer": (0.0, 1.0), "attention": (0.0, 1.0),
    "p_original_change": (-1.0, 1.0), "p_drop": (-1.0, 1.0), "rank_answer": (1.0, None),
    "rank_counterfactual": (1.0, None)}
CLIPPED = "_clipped"  # grid.counts["<metric>_clipped"]: 1 where that cell's interval was clipped to the range


@dataclasses.dataclass
class Grid:
    axes: tuple[str, ...]
    labels: dict[str, list]
    mean: dict[str, np.ndarray]
    ci_low: dict[str, np.ndarray]
    ci_high: dict[str, np.ndarray]
    n: np.ndarray  # pairs contributing to each cell
    counts: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # per metric: non-NaN values
    token_labels: list[str] = dataclasses.field(default_factory=list)  # example token per column
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return list(self.mean)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.n.shape

    def to_frame(self):
        """One row per cell: the axes' labels, the token text, n, and each metric with its CI (and,
        for a bounded metric any of whose intervals was clipped to its range, `<metric>_ci_clipped`)."""
        import pandas as pd

        rows = []
        for index in np.ndindex(*self.shape):
            row: dict[str, Any] = {axis: self.labels[axis][i] for axis, i in zip(self.axes, index)}
            if self.token_labels:
                row["token"] = self.token_labels[index[1]]
            row["n"] = int(self.n[index])
            for metric in self.metrics:
                if metric in self.counts:
                    row[f"{metric}_n"] = int(self.counts[metric][index])
                row[metric] = float(self.mean[metric][index])
                row[f"{metric}_ci_low"] = float(self.ci_low[metric][index])
                row[f"{metric}_ci_high"] = float(self.ci_high[metric][index])
                if f"{metric}{CLIPPED}" in self.counts:
                    row[f"{metric}_ci_clipped"] = bool(self.counts[f"{metric}{CLIPPED}"][index])
            rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, metric: str = "normalized_effect", ax: Any = None, title: str = ""):
        """Heatmap of layers x columns (heads averaged for head grids) on `ax` (default: a new figure,
        made without pyplot, so no backend is touched); returns the figure. Colour limits and marks:
        `bindexp.plots.heatmap`."""
        from bindexp.plots.heatmap import plot_grid

        return plot_grid(self, metric, ax, title)

    @classmethod
    def load(cls, folder: Path) -> Grid:
        """The grid `bindexp.io.grids.write_grid` wrote into `folder`."""
        sidecar, arrays = read_grid_files(folder)
        metrics = sidecar["metrics"]
        return cls(
            axes=tuple(sidecar["axes"]),
            labels=sidecar["labels"],
            mean={m: arrays[m] for m in metrics},
            ci_low={m: arrays[f"{m}_ci_low"] for m in metrics},
            ci_high={m: arrays[f"{m}_ci_high"] for m in metrics},
            n=arrays["n"].astype(int),
            counts={**{m: arrays[f"{m}_n"].astype(int) for m in metrics if f"{m}_n" in arrays},
                    **{c: arrays[f"{c}_count"].astype(int) for c in sidecar.get("counts", []) if f"{c}_count" in arrays}},
            token_labels=sidecar.get("token_labels", []),
            info=sidecar.get("info", {}),
        )


class GridAccumulator:
    """Running sums per cell, so memory stays flat however many pairs stream through."""

    def __init__(self, axes: Sequence[str], labels: dict[str, list], metrics: Sequence[str]):
        self.axes = tuple(axes)
        self.labels = labels
        shape = tuple(len(labels[a]) for a in self.axes)
        self.moments = {m: RunningMoments(shape) for m in metrics}  # stable streamed mean and variance
        self.outcomes = {m: True for m in metrics if m in PROPORTION_METRICS}  # only 0/1 values so far
        self.pairs = np.zeros(shape, dtype=int)
        self.token_labels: list[str] = []

    def add(self, values: dict[str, np.ndarray]) -> None:
        """One pair's values per cell; NaN marks a cell this pair has no value for."""
        for metric, array in values.items():
            self.moments[metric].add(array)
            if self.outcomes.get(metric):  # (means over runs are not 0/1: they get t intervals)
                self.outcomes[metric] = bool(np.all(np.isin(np.asarray(array)[~np.isnan(array)], (0.0, 1.0))))
        self.pairs += ~np.isnan(np.asarray(values["logit_diff"] if "logit_diff" in values
                                           else next(iter(values.values())), dtype=float))

    def grid(self, info: dict[str, Any] | None = None) -> Grid:
        """Means with 95% intervals: Wilson for 0/1 outcomes (whose mean is then successes / n
        exactly: 1/20 is 0.05, not 0.049999999999999996), Student-t otherwise, clipped to the
        metric's range for bounded metrics (`METRIC_RANGES`; the clipped cells counted in
        `info["clipped"]`)."""
        mean, low, high, clipped = {}, {}, {}, {}
        for metric, moments in self.moments.items():
            mean[metric], low[metric], high[metric] = moments.interval()
            if self.outcomes.get(metric):
                successes = np.rint(moments.mean * moments.count)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean[metric] = np.where(moments.count > 0, successes / moments.count, np.nan)
                low[metric], high[metric] = wilson_bounds(successes, moments.count)
            elif metric in METRIC_RANGES:
                low[metric], high[metric], moved = clip_to_range(low[metric], high[metric], METRIC_RANGES[metric])
                if moved.any():
                    clipped[metric] = moved.astype(int)
        counts = {m: self.moments[m].count.astype(int) for m in self.moments}
        counts.update({f"{m}{CLIPPED}": flags for m, flags in clipped.items()})
        info = dict(info or {})
        if clipped:
            info["clipped"] = {metric: int(flags.sum()) for metric, flags in clipped.items()}
        return Grid(self.axes, self.labels, mean, low, high, self.pairs.copy(), counts, list(self.token_labels), info)


def proportion_interval(grid: Grid, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(successes, low, high) per cell of a 0/1 metric (IIA, top-1): 95% Wilson bounds from the
    cell's mean and count."""
    mean, count = np.nan_to_num(grid.mean[metric]), grid.counts.get(metric, grid.n)
    successes = np.rint(mean * count).astype(int)
    low, high = np.full(mean.shape, np.nan), np.full(mean.shape, np.nan)
    for index in np.ndindex(*mean.shape):
        low[index], high[index] = wilson_interval(int(successes[index]), int(count[index]))
    return successes, low, high
