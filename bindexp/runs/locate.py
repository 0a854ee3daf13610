"""Locate run (job_type `locate`): for each variable of the task's declared causal model, where in
the model (layer x token role) interchanging it moves the output as the hypothesis predicts.

    outcome = run_locate(LocateSettings(model="smollm2-135m", hops=2, seq_len=6))
    outcome.table            # variable -> where (best cell, cells reaching the IIA threshold)
    outcome.grids["value"]   # the exact patch grid of that variable's pairs (metric "iia" ...)

Each counterfactual kind the causal model maps to a variable is one exact patch grid over that
kind's pairs (the patch runner's pair selection and grid, reused); pairs are grouped by the
variable they interchange (chain_link: the pointer of the hop it edits). A cell's IIA is the share
of pairs whose patched prediction is the output the causal model predicts -- which for every
binding kind is the counterfactual's answer, checked pair by pair before any patching -- with a
95% Wilson interval.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bindexp.errors import InputError, ModelError, TaskError
from bindexp.interventions.results.grid import Grid
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.runs.analysis import prepare, proportion_interval, save_figure, write_table
from bindexp.runs.analysis_settings import LocateSettings
from bindexp.io.folder import (CAUSAL_MODEL_FILE, GRID_ARRAYS, GRID_SIDECAR, LOCATE_CELLS_FILE, LOCATE_FILE, LOCATE_HEATMAP_FILE, PAIRS_FILE)
from bindexp.runs.patch import candidate_pairs, choose_pairs, compute_grid, patch_shots
from bindexp.runs.tracking import Tracker
from bindexp.tasks.causal_model import CONTROL, CausalModel, causal_model, group_by_variable
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.registry import get_task

IIA = "iia"


@dataclasses.dataclass
class LocateOutcome:
    table: pd.DataFrame  # one row per variable: where it is (see `locate_table`)
    cells: pd.DataFrame  # one row per (variable, layer, role): IIA with its Wilson interval
    grids: dict[str, Grid]  # variable -> its exact patch grid
    summary: dict[str, Any]
    out_dir: Path


def locate_kinds(settings: LocateSettings, model: CausalModel) -> list[str]:
    """The settings' kinds, or every kind the causal model maps to a variable that these settings
    can draw pairs for (chain_link needs hops >= 2)."""
    declared = get_task(settings.task).counterfactuals
    if settings.counterfactuals is not None:
        for kind in settings.counterfactuals:
            if kind not in declared or kind not in model.interventions:
                raise InputError(f"counterfactual {kind!r} is not one the {settings.task} causal model maps to a "
                                 f"variable; it maps {', '.join(model.interventions)}")
        return list(settings.counterfactuals)
    kinds = []
    for kind, variable in model.interventions.items():
        if variable == CONTROL or kind not in declared:
            continue
        requires = declared[kind].requires
        try:
            if requires is not None:
                requires({"hops": settings.hops} if "hops" in get_task(settings.task).axes else {})
        except TaskError:
            continue
        kinds.append(kind)
    return kinds


def check_predictions(model: CausalModel, pairs: Sequence[CounterfactualPair]) -> None:
    """The exact grid scores IIA against the counterfactual's answer: the hypothesis must predict it."""
    for pair in pairs:
        predicted = model.predict(pair)
        if predicted != pair.counterfactual.answer:
            raise TaskError(f"the causal model predicts {predicted!r} under the {pair.kind} interchange of "
                            f"{pair.original.text!r}, not the counterfactual's answer {pair.counterfactual.answer!r}; "
                            "locate scores IIA against the counterfactual's answer")


def _ranges(layers: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    spans: list[list[int]] = []
    for layer in layers:
        if spans and layer == spans[-1][1] + 1:
            spans[-1][1] = layer
        else:
            spans.append([layer, layer])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)


def variable_cells(variable: str, kind: str, grid: Grid) -> pd.DataFrame:
    """One row per (layer, role) of a variable's grid: IIA, its Wilson interval, pairs."""
    successes, low, high = proportion_interval(grid, IIA)
    rows = []
    for li, layer in enumerate(grid.labels["layer"]):
        for ci, role in enumerate(grid.labels["role"]):
            n = int(grid.counts[IIA][li, ci])
            rows.append({"variable": variable, "counterfactual": kind, "layer": layer, "role": role, "n": n,
                         IIA: float(grid.mean[IIA][li, ci]) if n else float("nan"),
                         "iia_ci_low": float(low[li, ci]), "iia_ci_high": float(high[li, ci])})
    return pd.DataFrame(rows)


def locate_table(cells: pd.DataFrame, threshold: float, roles_of: dict[str, str]) -> pd.DataFrame:
    """Per variable: its best cell (highest IIA, earliest layer first) with the interval, and
    where = the layers per role whose IIA reaches `threshold`."""
    rows = []
    for variable, part in cells.groupby("variable", sort=False):
        scored = part.dropna(subset=[IIA])
        best = scored.sort_values([IIA, "layer"], ascending=[False, True], kind="stable").iloc[0] \
            if not scored.empty else None
        reached = scored[scored[IIA] >= threshold]
        where = "; ".join(f"{role}@{_ranges(sorted(group['layer']))}" for role, group in
                          reached.groupby("role", sort=False))
        rows.append({"variable": variable, "counterfactual": part["counterfactual"].iloc[0],
                     "variable_role": roles_of.get(variable), "pairs": int(part["n"].max()),
                     "best_layer": None if best is None else int(best["layer"]),
                     "best_role": None if best is None else best["role"],
                     IIA: None if best is None else float(best[IIA]),
                     "iia_ci_low": None if best is None else float(best["iia_ci_low"]),
                     "iia_ci_high": None if best is None else float(best["iia_ci_high"]),
                     "cells_reaching_threshold": len(reached), "where": where or "-"})
    return pd.DataFrame(rows)


def iia_panels(grids: dict[str, Grid], title: str):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0 * len(grids), 4.4))
    axes = figure.subplots(1, len(grids), squeeze=False)[0]
    for ax, (variable, grid) in zip(axes, grids.items()):
        grid.plot(IIA, ax=ax, title=f"{variable}: IIA")
    figure.suptitle(title, fontsize=9)
    return figure


def run_locate(settings: LocateSettings, cache: ModelCache = MODEL_CACHE) -> LocateOutcome:
    model = causal_model(settings.task)
    kinds = locate_kinds(settings, model)
    if not kinds:
        raise InputError(f"no counterfactual kind of the {settings.task} causal model fits these settings")
    shots = patch_shots(settings)
    for kind in kinds:  # impossible requests fail here, before any model or W&B work
        candidate_pairs(settings.model_copy(update={"counterfactual": kind}), 1, shots)
    lm, shots = prepare(settings, cache)
    with Tracker(settings, "locate") as tracker:
        tracker.update_config({"model_info": lm.describe(), "causal_model": model.describe})
        grids: dict[str, Grid] = {}
        kind_of: dict[str, str] = {}
        roles_of: dict[str, str | None] = {}
        declaration: list[dict[str, str]] = []
        files: list[Path] = []
        looked_at, skipped = {}, {}
        for kind in kinds:
            per_kind = settings.model_copy(update={"counterfactual": kind})
            try:
                pairs, looked_at[kind] = choose_pairs(lm, per_kind, shots)
            except ModelError as err:  # this kind has no usable pair: the others still count
                skipped[kind] = str(err)
                print(f"warning: {kind}: {err}", file=sys.stderr)
                continue
            check_predictions(model, pairs)
            if not declaration:
                declaration = model.table(pairs[0].original)
            for variable, group in group_by_variable(model, pairs).items():
                folder = tracker.folder.analysis_grid(variable)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / PAIRS_FILE).unlink(missing_ok=True)
                try:
                    grids[variable] = compute_grid(lm, per_kind, group, shots, folder).grid
                except ModelError as err:  # e.g. every pair below min_gap
                    skipped[variable] = str(err)
                    print(f"warning: {variable} ({kind}): {err}", file=sys.stderr)
                    continue
                kind_of[variable] = kind
                roles_of[variable] = model.variable(group[0].original, variable).role if variable != CONTROL else None
                grids[variable].save(folder, per_kind.model_dump(mode="json"))
                files += [folder / GRID_ARRAYS, folder / GRID_SIDECAR, folder / PAIRS_FILE]
        if not grids:
            raise ModelError("no variable could be located: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        cells = pd.concat([variable_cells(v, kind_of[v], g) for v, g in grids.items()], ignore_index=True)
        table = locate_table(cells, settings.iia_threshold, roles_of)
        files.append(write_table(tracker, "locate", table, LOCATE_FILE))
        files.append(write_table(tracker, "locate_cells", cells, LOCATE_CELLS_FILE))
        files.append(tracker.write_json(CAUSAL_MODEL_FILE, {"task": model.task, "describe": model.describe,
                                                            "interventions": dict(model.interventions),
                                                            "variables": declaration}))
        files.append(save_figure(tracker, "locate_iia", iia_panels(grids, f"{lm.name}: IIA per variable"),
                                 LOCATE_HEATMAP_FILE))
        summary = {"iia_threshold": settings.iia_threshold, "counterfactuals": kinds,
                   "pairs_looked_at": looked_at, "skipped": skipped,
                   "variables": {row["variable"]: {k: v for k, v in row.items() if k != "variable"}
                                 for row in table.astype(object).where(table.notna(), None).to_dict("records")}}
        tracker.write_summary(summary)
        tracker.log_artifact("locate", [f for f in files if f.exists()], settings.model_dump(mode="json"),
                             keep_folders=True)
        return LocateOutcome(table, cells, grids, summary, tracker.out_dir)
