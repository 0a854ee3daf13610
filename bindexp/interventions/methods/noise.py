"""A run's own noise floor: the same cells patched with the clean run's own values.

Such a patch changes nothing mathematically, so every normalized effect it shows is rounding of
the patching path (cropped caches, skipped layers, batched rows) in the run's dtype. Per cell the
floor is the largest |normalized effect| over the pairs measured: a mean effect within it cannot
be told from rounding. It costs the patched cells of those pairs (their share of the grid's) plus
one clean/counterfactual preparation forward per pair.

    floor, info = noise_floor(plan, n_pairs=4)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bindexp.interventions.engine.plan import GridPlan
from bindexp.interventions.methods.exact import patch_cells


def noise_floor(plan: GridPlan, n_pairs: int, *, cells_per_forward: int = 32, min_gap: float = 0.0,
                metric: str = "normalized_effect") -> tuple[np.ndarray, dict[str, Any]]:
    """Per cell, max |metric| of the clean-source patch over the plan's first `n_pairs` pairs
    (NaN where none of them has the cell); and what it cost (`pairs`, `patched_cells`)."""
    subset = dataclasses.replace(plan, tokenized=plan.tokenized[:n_pairs])
    rows: list[dict[str, Any]] = []
    grid = patch_cells(subset, source="clean", cells_per_forward=cells_per_forward, pairs_per_chunk=max(1, n_pairs),
                       on_pair=rows.append, min_gap=min_gap)
    floor = np.full(grid.n.shape, np.nan)
    for row in rows:
        magnitude = np.abs(np.array(row[metric], dtype=float))
        floor = np.fmax(floor, magnitude)  # NaN only where every pair is NaN
    return floor, {"pairs": len(rows), "patched_cells": grid.info["patched_cells"]}
