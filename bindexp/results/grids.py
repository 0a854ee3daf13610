"""Patch runs' grids averaged over runs: per model x hops (x site, method, counterfactual), each
metric's mean over runs, cell by cell, with its 95% Student-t interval."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bindexp.io.folder import GRID_ARRAYS, GRID_SIDECAR
from bindexp.results.records import RunRecord, measured_settings

GRID_KEY = ["model", "hops", "site", "method", "counterfactual"]


@dataclasses.dataclass
class AveragedGrid:
    key: dict[str, Any]  # model, hops, site, method, counterfactual
    grid: Any  # bindexp.interventions.results.grid.Grid: per cell, the mean over runs with its 95% interval
    run_ids: list[str]
    name: str  # folder name: the key's values (+ "-layout2" ... when one key has grids of several layouts)


def load_grid(record: RunRecord) -> Any:
    """A patch run's grid (grid.safetensors + grid.json, downloaded first for API runs), or None."""
    from bindexp.interventions.results.grid import Grid

    sidecar, arrays = record.file(GRID_SIDECAR), record.file(GRID_ARRAYS)
    if sidecar is None or arrays is None or sidecar.parent != arrays.parent:
        return None
    return Grid.load(sidecar.parent)


def _signature(grid: Any) -> str:
    shapes = {metric: list(values.shape) for metric, values in sorted(grid.mean.items())}
    return json.dumps([list(grid.axes), grid.labels, shapes], sort_keys=True, default=str)


def average_grids(records: Sequence[RunRecord]) -> tuple[list[AveragedGrid], list[str]]:
    """Per model x hops (x site, method, counterfactual): each metric's mean over runs, cell by cell,
    with its 95% Student-t interval over runs (the runs' means streamed through a `GridAccumulator`); a cell
    missing (nan) in a run is averaged over the runs that have it. Only grids whose axes, labels and
    shapes match are averaged together; others form their own set, with a warning. Returns
    (averages, warnings)."""
    from bindexp.interventions.results.grid import GridAccumulator

    groups: dict[tuple[str, str], list[tuple[RunRecord, Any]]] = {}
    for record in records:
        if record.job_type not in (None, "patch"):
            continue
        grid = load_grid(record)
        if grid is None:
            continue
        # runs are averaged as seeds only when every other setting is the same
        key = measured_settings(record)
        key = {**{k: record.config.get(k) for k in GRID_KEY}, **key}
        groups.setdefault((json.dumps(key, sort_keys=True, default=str), _signature(grid)), []).append((record, grid))
    sets_per_key: dict[str, int] = {}
    for key_json, _ in groups:
        sets_per_key[key_json] = sets_per_key.get(key_json, 0) + 1
    warnings = [f"grids of {k} differ in axes, labels or shape: averaged in {n} separate sets"
                for k, n in sets_per_key.items() if n > 1]
    averaged, seen, named = [], {}, {}
    for (key_json, _), members in sorted(groups.items()):
        first = members[0][1]
        accumulator = GridAccumulator(first.axes, first.labels, first.metrics)
        for _, member in members:
            accumulator.add(member.mean)
        run_ids = [r.run_id for r, _ in members]
        grid = accumulator.grid({"runs": run_ids, "n_is": "runs per cell"})
        grid.n = np.max(np.stack(list(grid.counts.values())), axis=0)  # runs with any metric in the cell
        loaded = json.loads(key_json)
        key = {k: loaded[k] for k in GRID_KEY}
        seen[key_json] = seen.get(key_json, 0) + 1
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(str(v) for v in key.values()))
        if named.setdefault(name, key_json) != key_json:  # same headline settings, others differ
            name += "-" + hashlib.sha1(key_json.encode()).hexdigest()[:6]
        name += f"-layout{seen[key_json]}" if sets_per_key[key_json] > 1 else ""
        averaged.append(AveragedGrid(key, grid, run_ids, name))
    return averaged, warnings


def grid_cells(averaged: AveragedGrid) -> pd.DataFrame:
    """The averaged grid in long format (one row per cell: labels, runs, mean and interval per metric)."""
    frame = averaged.grid.to_frame().rename(columns={"n": "runs"})
    return frame.assign(**averaged.key)[[*averaged.key, *frame.columns]]
