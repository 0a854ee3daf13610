"""What a grid says in a few numbers: the best layer per column, and where the effect passes
from the task's value role to the final token."""

from __future__ import annotations

from typing import Any

import numpy as np

from bindexp.interventions.grid import Grid


def grid_summary(grid: Grid, metric: str, value_role: str | None = "root_value") -> dict[str, Any]:
    """Best layer per column; `handoff_layer`: the first layer where the final token's effect
    exceeds the value role's (when both are columns)."""
    values = grid.mean[metric]
    if values.ndim == 3:
        values = np.nanmax(values, axis=2)
    layers, columns = grid.labels["layer"], grid.labels[grid.axes[1]]
    best = {}
    for ci, column in enumerate(columns):
        if np.isfinite(values[:, ci]).any():
            li = int(np.nanargmax(values[:, ci]))
            best[str(column)] = {"layer": layers[li], metric: float(values[li, ci])}
    summary: dict[str, Any] = {"metric": metric, "best_layer_by_column": best,
                               "n_pairs": int(grid.n.max()) if grid.n.size else 0}
    if value_role in columns and "final" in columns:
        root, final = values[:, columns.index(value_role)], values[:, columns.index("final")]
        crossing = [layers[i] for i in range(len(layers)) if final[i] > root[i]]
        summary["handoff_layer"] = crossing[0] if crossing else None
    return summary
