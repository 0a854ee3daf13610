"""The patch heatmap (`Grid.plot`): layers x columns on a diverging scale centred on 0.

Colour limits: normalized effect and IIA are fixed at [-1, 1] (1 = fully the counterfactual's,
0 = no effect), so grids compare at a glance; every other metric is symmetric around 0 at
the largest |value| of the grid, but never narrower than +-MIN_BOUND, so effects of 1e-5 do not
look saturated. Marks: a dot where the cell's 95% interval includes 0; a ring where the
normalized effect lies within the grid's `noise_floor` (when it has one); hatching where the cell
was not run for any pair (before the counterfactual edit: equal to the clean run by construction).
Heads are averaged for head grids. Token texts under the column names come from the first pair.
Figures are made without pyplot, so no backend is touched.
"""

from __future__ import annotations

import textwrap
import warnings
from typing import Any

import numpy as np

from bindexp.vocab import NOISE_FLOOR, NOT_RUN

FIXED_LIMITS = {"normalized_effect": 1.0, "iia": 1.0}  # metric -> fixed symmetric limit
MIN_BOUND = 1e-3  # other metrics: the colour scale never spans less than +-MIN_BOUND
MAX_WIDTH, MAX_HEIGHT = 16.0, 10.0  # inches: positions=all grids stay a readable size


def colour_limit(metric: str, values: np.ndarray) -> float:
    """The symmetric colour limit of `metric` for these values (see the module doc)."""
    if metric in FIXED_LIMITS:
        return FIXED_LIMITS[metric]
    finite = np.abs(values[np.isfinite(values)])
    return max(float(finite.max()) if finite.size else 0.0, MIN_BOUND)


def scale_label(metric: str, limit: float) -> str:
    if metric in FIXED_LIMITS:
        return f"{metric}\n(fixed scale -{limit:g} to {limit:g})"
    return f"{metric}\n(scale +-max |value|, at least +-{MIN_BOUND:g})"


def _by_cell(array: np.ndarray, reduce: Any) -> np.ndarray:
    """[layer, column, head] -> [layer, column] with `reduce` over heads; 2-D arrays pass through."""
    return reduce(array, axis=2) if array.ndim == 3 else array


def ci_crosses_zero(grid: Any, metric: str) -> np.ndarray:
    """Cells whose 95% interval includes 0 (head grids: in every head), [layer, column]."""
    low, high = grid.ci_low[metric], grid.ci_high[metric]
    crosses = (low <= 0) & (high >= 0)
    return _by_cell(crosses, np.all)


def within_noise_floor(grid: Any, metric: str) -> np.ndarray | None:
    """Cells whose |normalized effect| is at most the grid's noise floor; None without one."""
    if metric != "normalized_effect" or NOISE_FLOOR not in grid.mean:
        return None
    inside = np.abs(grid.mean[metric]) <= np.abs(grid.mean[NOISE_FLOOR])
    return _by_cell(inside, np.all)


def not_run(grid: Any) -> np.ndarray:
    """Cells no pair ran (known equal to the clean run), [layer, column]."""
    counts = grid.counts.get(NOT_RUN)
    if counts is None:
        return np.zeros(grid.shape[:2], dtype=bool)
    skipped = (counts >= grid.n) & (counts > 0) if counts.shape == grid.n.shape else counts > 0
    return _by_cell(skipped, np.all)


def plot_grid(grid: Any, metric: str = "normalized_effect", ax: Any = None, title: str = "") -> Any:
    """Draw the heatmap on `ax` (default: a new figure); returns the figure."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN head slices stay NaN
        values = _by_cell(grid.mean[metric], np.nanmean)
    rows, cols = values.shape
    if ax is None:
        width = min(max(4.5, 0.28 * cols + 3.0), MAX_WIDTH)
        height = min(max(3.5, 0.2 * rows + 2.2), MAX_HEIGHT)
        ax = Figure(figsize=(width, height)).subplots()
    limit = colour_limit(metric, values)
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, origin="lower",
                      interpolation="nearest")
    for i, j in zip(*np.nonzero(not_run(grid))):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.9", edgecolor="0.6", hatch="///",
                               linewidth=0, label="_not run"))
    marks = []
    crosses = ci_crosses_zero(grid, metric) & ~not_run(grid)
    if crosses.any():
        ys, xs = np.nonzero(crosses)
        ax.scatter(xs, ys, s=4, c="0.25", marker="o", linewidths=0)
        marks.append("dot: 95% CI includes 0")
    floor = within_noise_floor(grid, metric)
    if floor is not None and (floor & ~not_run(grid)).any():
        ys, xs = np.nonzero(floor & ~not_run(grid))
        ax.scatter(xs, ys, s=30, facecolors="none", edgecolors="0.35", marker="o", linewidths=0.6)
        marks.append("ring: within the noise floor")
    if not_run(grid).any():
        marks.append("hatched: not run (before the edit, 0 by construction)")
    _ticks(ax, grid, rows, cols)
    width_chars = int(ax.figure.get_size_inches()[0] * 11)
    ax.set_title(textwrap.fill(title or metric, max(30, width_chars)), fontsize=9)
    colourbar = ax.figure.colorbar(image, ax=ax)
    colourbar.set_label(scale_label(metric, limit), fontsize=7)
    if marks:
        ax.figure.text(0.01, 0.005, "; ".join(marks), fontsize=6, ha="left", va="bottom")
    ax.figure.tight_layout(rect=(0, 0.03 if marks else 0, 1, 1))
    return ax.figure


def _ticks(ax: Any, grid: Any, rows: int, cols: int) -> None:
    """Integer layer ticks (every layer up to 32 rows, else every k-th) and column ticks with the
    first pair's token text."""
    layers = [int(layer) for layer in grid.labels["layer"]]
    step = max(1, int(np.ceil(rows / 32)))
    ax.set_yticks(range(0, rows, step), [str(layers[i]) for i in range(0, rows, step)], fontsize=7)
    ax.set_ylabel("layer")
    axis = grid.axes[1]
    columns = grid.labels[axis]
    tokens = grid.token_labels or [None] * cols
    every = max(1, int(np.ceil(cols / 100)))
    shown = range(0, cols, every)
    ax.set_xticks(list(shown), [f"{columns[j]}\n{tokens[j]!r}" if tokens[j] is not None else str(columns[j])
                                for j in shown], rotation=90, fontsize=6 if cols > 30 else 7)
    where = "role" if axis == "role" else "position (tokens from the program's start)"
    ax.set_xlabel(f"{where}" + ("; token text: first pair" if grid.token_labels else ""), fontsize=8)
