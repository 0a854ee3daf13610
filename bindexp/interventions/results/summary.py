"""What a grid says in a few numbers.

- Per column, the layers whose 95% interval overlaps the best cell's (not one arbitrary layer):
  with an effect flat from layer 0 to 21, the summary says 0..21.
- For normalized effects, the same cell's ratio of means (mean LD shift / mean gap) and median.
- `handoff_layer`, only for the task's value-role counterfactual: the first layer where the final
  token's lower bound exceeds the value role's upper bound (None when it never does).
- With a `noise_floor` metric in the grid: how many cells lie within it, and whether each column's
  best does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bindexp.interventions.results.grid import Grid
from bindexp.vocab import NOISE_FLOOR


def _layer_by_column(grid: Grid, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Values, interval bounds and (for head grids) the head of each (layer, column): the head
    with the largest value."""
    values, low, high = grid.mean[metric], grid.ci_low[metric], grid.ci_high[metric]
    if values.ndim == 2:
        return values, low, high, np.full(values.shape, -1)
    filled = np.where(np.isnan(values), -np.inf, values)
    head = filled.argmax(axis=2)
    take = lambda a: np.take_along_axis(a, head[..., None], axis=2)[..., 0]  # noqa: E731
    return take(values), take(low), take(high), head


def layer_ranges(layers: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    spans: list[list[int]] = []
    for layer in layers:
        if spans and layer == spans[-1][1] + 1:
            spans[-1][1] = layer
        else:
            spans.append([layer, layer])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)


def _float(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def overlapping_layers(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[int, list[int]]:
    """The index of the largest value and the indices whose interval reaches the best one's lower
    bound (the best itself always included; a NaN bound counts as the value itself)."""
    best = int(np.nanargmax(values))
    floor = low[best] if np.isfinite(low[best]) else values[best]
    tops = np.where(np.isfinite(high), high, values)
    return best, [i for i in range(len(values)) if np.isfinite(values[i]) and tops[i] >= floor]


def grid_summary(grid: Grid, metric: str, value_role: str | None = None, *, handoff: bool = False,
                 key: str = "best_layer_by_column") -> dict[str, Any]:
    """Per column (under `key`): `layers` (overlapping the best, see `overlapping_layers`),
    `layer_range` [first, last], `peak_layer`, the metric and its interval there; with a
    normalized-effect metric, `ratio_of_means` and `median` there; with a noise floor,
    `within_noise_floor`. handoff: report `handoff_layer` (the counterfactual edits `value_role`)."""
    values, low, high, head = _layer_by_column(grid, metric)
    layers, columns = grid.labels["layer"], grid.labels[grid.axes[1]]
    floor = _layer_by_column(grid, NOISE_FLOOR)[0] if NOISE_FLOOR in grid.mean else None
    per_column = {}
    for ci, column in enumerate(columns):
        if not np.isfinite(values[:, ci]).any():
            continue
        li, near = overlapping_layers(values[:, ci], low[:, ci], high[:, ci])
        entry: dict[str, Any] = {"layers": [layers[i] for i in near],
                                 "layer_range": [layers[near[0]], layers[near[-1]]],
                                 "peak_layer": layers[li], metric: float(values[li, ci]),
                                 "ci": [_float(low[li, ci]), _float(high[li, ci])]}
        if head[li, ci] >= 0:
            entry["head"] = grid.labels["head"][int(head[li, ci])]
        cell = (li, ci) if head[li, ci] < 0 else (li, ci, int(head[li, ci]))
        if metric == "normalized_effect" and {"ld_shift", "ld_gap"} <= set(grid.mean):
            entry["ratio_of_means"] = _float(grid.mean["ld_shift"][cell] / grid.mean["ld_gap"][cell])
        if metric == "normalized_effect" and "normalized_effect_median" in grid.mean:
            entry["median"] = _float(grid.mean["normalized_effect_median"][cell])
        if floor is not None:
            entry["within_noise_floor"] = bool(abs(values[li, ci]) <= floor[li, ci])
        per_column[str(column)] = entry
    summary: dict[str, Any] = {"metric": metric, key: per_column,
                               "n_pairs": int(grid.n.max()) if grid.n.size else 0}
    if NOISE_FLOOR in grid.mean:
        summary.update(noise_summary(grid, metric))
    if handoff and value_role in columns and "final" in columns:
        summary["handoff_layer"] = handoff_layer(grid, metric, value_role)
    return summary


def handoff_layer(grid: Grid, metric: str, value_role: str) -> Any:
    """The first layer where the final token's lower bound exceeds the value role's upper bound."""
    values, low, high, _ = _layer_by_column(grid, metric)
    columns = grid.labels[grid.axes[1]]
    final, role = columns.index("final"), columns.index(value_role)
    for li, layer in enumerate(grid.labels["layer"]):
        if np.isfinite(low[li, final]) and np.isfinite(high[li, role]) and low[li, final] > high[li, role]:
            return layer
    return None


def noise_summary(grid: Grid, metric: str) -> dict[str, Any]:
    """How many measured cells have |mean effect| within the noise floor of their cell."""
    values, floor = grid.mean[metric], grid.mean[NOISE_FLOOR]
    measured = np.isfinite(values) & np.isfinite(floor)
    return {"noise_floor_max": _float(np.nanmax(floor)) if np.isfinite(floor).any() else None,
            "cells_within_noise_floor": int((np.abs(values[measured]) <= floor[measured]).sum()),
            "cells_measured": int(measured.sum())}


def worst_cell(grid: Grid, metric: str) -> dict[str, Any] | None:
    """The cell with the largest value of `metric` (e.g. the flip rate of a control)."""
    values = grid.mean[metric]
    if not np.isfinite(values).any():
        return None
    index = np.unravel_index(int(np.nanargmax(values)), values.shape)
    cell = {axis: grid.labels[axis][i] for axis, i in zip(grid.axes, index)}
    return {**cell, metric: float(values[index]), "ci": [_float(grid.ci_low[metric][index]),
                                                          _float(grid.ci_high[metric][index])]}
