"""The hypotheses job (job_type `hypotheses`): competing causal models of the task scored on the same
interventions -- which one explains the model where?

    outcome = run_hypotheses(HypothesesSettings(model="smollm2-135m", hops=2, seq_len=6))
    outcome.verdicts        # per counterfactual x layer x role: each hypothesis's decision, the verdict
    outcome.regions         # the verdicts as layer ranges per (counterfactual, role)
    outcome.cells           # per hypothesis x variable x cell: IIA with its Wilson interval and n

For each counterfactual kind the task declares (those these settings can draw; `--counterfactuals`
picks some) one exact patch grid over that kind's pairs (the patch runner's selection and grid,
reused), keeping every pair's patched prediction at every cell. Every hypothesis the task declares
(`TaskSpec.hypotheses`; `--hypotheses` picks some) is scored on those same patched outputs: per
variable, the IIA of the output it predicts were the cell carrying that variable, and the verdict
per cell by the interval rule (`bindexp.interventions.results.hypotheses`). IIA needs no logit gap,
so `min_gap` defaults to 0 here, and the grids carry no noise floor unless asked.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from bindexp.errors import InputError, ModelError, TaskError
from bindexp.interventions.methods.exact import CLEAN_PREDICTION, PREDICTION
from bindexp.interventions.results.grid import Grid
from bindexp.interventions.results.hypotheses import (
    NONE,
    VERDICT_LABELS,
    cells_where,
    effect_cells,
    excluded_mask,
    hypothesis_cells,
    verdict_regions,
    verdicts,
)
from bindexp.io.folder import (
    HYPOTHESES_CELLS_FILE,
    HYPOTHESES_FILE,
    PAIRS_FILE,
    VERDICT_REGIONS_FILE,
    VERDICTS_FIGURE_FILE,
    VERDICTS_FILE,
)
from bindexp.io.grids import write_grid
from bindexp.io.streams import write_lines
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.plots.analyses import verdict_panels
from bindexp.runs.analysis import Analysis, AnalysisRun, run_analysis
from bindexp.runs.pairs import candidate_pairs, check_layers, choose_pairs
from bindexp.runs.patching import compute_grid
from bindexp.runs.settings import PairSettings, PatchMethodGroup, StrList, none_list
from bindexp.stats import DECISION_RULE
from bindexp.tasks.causal_model import CausalModel, hypotheses
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.registry import get_task


class HypothesesSettings(PatchMethodGroup, PairSettings):
    """`scripts/hypotheses.py`: every hypothesis the task declares, scored on the same exact patch
    grids (one per counterfactual kind): IIA per hypothesis x variable x cell and a verdict per cell."""

    counterfactuals: StrList | None = Field(None, description="kinds to run (None: every kind the task declares "
                                                              "that these settings can draw)")
    hypotheses: StrList | None = Field(None, description="hypotheses to score (None: every one the task declares)")
    iia_threshold: float = Field(0.5, gt=0, le=1, description="a cell carries a variable when the Wilson lower bound "
                                                              "of its IIA reaches this")
    min_gap: float = Field(0.0, ge=0, description="leave out pairs whose logit gap is below this (IIA needs none)")
    noise_floor_pairs: int = Field(0, ge=0, description="exact: pairs re-patched for the noise floor (0: none)")

    @field_validator("counterfactuals", "hypotheses", mode="before")
    @classmethod
    def _none(cls, value):
        return none_list(value)

    @model_validator(mode="after")
    def _exact_role_grids(self) -> HypothesesSettings:
        if self.method != "exact" or self.site == "head" or self.positions != "roles":
            raise ValueError("hypotheses patches exact role grids: method=exact, positions=roles, a site other than head")
        return self


@dataclasses.dataclass
class HypothesesOutcome:
    verdicts: pd.DataFrame
    regions: pd.DataFrame
    cells: pd.DataFrame
    grids: dict[str, Grid]  # counterfactual kind -> its exact patch grid
    summary: dict[str, Any]
    out_dir: Path


def chosen_hypotheses(settings: HypothesesSettings) -> dict[str, CausalModel]:
    declared = hypotheses(settings.task)
    if settings.hypotheses is None:
        return declared
    unknown = [name for name in settings.hypotheses if name not in declared]
    if unknown or len(settings.hypotheses) < 2:
        raise InputError(f"hypotheses must name at least two of the {settings.task} task's: {', '.join(declared)}")
    return {name: declared[name] for name in settings.hypotheses}


def hypothesis_kinds(settings: HypothesesSettings) -> list[str]:
    """The settings' kinds, or every kind the task declares whose pairs these settings can draw."""
    declared = get_task(settings.task).counterfactuals
    if settings.counterfactuals is not None:
        unknown = [kind for kind in settings.counterfactuals if kind not in declared]
        if unknown:
            raise InputError(f"counterfactual {unknown[0]!r} is not a {settings.task} kind ({', '.join(declared)})")
        return list(settings.counterfactuals)
    kinds = []
    for kind, declaration in declared.items():
        try:
            if declaration.requires is not None:
                requires = {**settings.task_options(), **({"hops": settings.hops} if "hops" in
                                                          get_task(settings.task).axes else {})}
                declaration.requires(requires)
        except TaskError:
            continue
        kinds.append(kind)
    return kinds


def _check_request(settings: HypothesesSettings, shots) -> None:
    chosen_hypotheses(settings)
    for kind in hypothesis_kinds(settings):  # impossible requests fail here, before any model or W&B work
        candidate_pairs(settings.model_copy(update={"counterfactual": kind}), 1, shots)


def predictions_of(models: dict[str, CausalModel], pairs: Sequence[CounterfactualPair], roles: Sequence[str]
                   ) -> tuple[dict[tuple[str, str, str], list[Any]], dict[tuple[str, str], set[str]]]:
    """Per (hypothesis, variable, role): each pair's predicted output were that role's cell carrying
    the variable (the variable read from the counterfactual as carried there; NONE: the
    hypothesis's own clean output); and per (hypothesis, variable) the roles that may carry it."""
    predictions, allowed = {}, {}
    program = pairs[0].original
    for name, model in models.items():
        for variable in model.variables_of(program):
            for role in roles:
                predictions[(name, variable.name, role)] = [model.predict_variable(pair, variable.name, role)
                                                            for pair in pairs]
            allowed[(name, variable.name)] = {role for role in roles if variable.name in model.carriers(program, role)}
        clean = [model.output(pair.original, None, None) for pair in pairs]
        predictions.update({(name, NONE, role): clean for role in roles})
        allowed[(name, NONE)] = set(roles)
    return predictions, allowed


def patched_outputs(records: Sequence[dict[str, Any]], candidates: Sequence[str], shape: tuple[int, int]) -> np.ndarray:
    """[pairs, layers, roles] of the patched outputs' texts from the pairs' records (None: no cell)."""
    out = np.full((len(records), *shape), None, dtype=object)
    for i, record in enumerate(records):
        for li, row in enumerate(record[PREDICTION]):
            for ri, index in enumerate(row):
                if index is not None:
                    out[i, li, ri] = candidates[int(index)]
    return out


@dataclasses.dataclass
class _Scored:
    kinds: list[str]
    grids: dict[str, Grid]
    records: dict[str, list[dict[str, Any]]]
    settings_of: dict[str, dict[str, Any]]
    looked_at: dict[str, int]
    skipped: dict[str, str]
    models: dict[str, CausalModel]
    declarations: dict[str, Any]
    cells: pd.DataFrame
    verdicts: pd.DataFrame
    regions: pd.DataFrame


def _compute(run: AnalysisRun) -> _Scored:
    settings, lm, shots = run.settings, run.lm, run.shots
    models, kinds = chosen_hypotheses(settings), hypothesis_kinds(settings)
    candidates = list(get_task(settings.task).pair_candidates)
    grids, records_of, settings_of, looked_at, skipped, frames, effects = {}, {}, {}, {}, {}, [], []
    declarations: dict[str, Any] = {}
    for kind in kinds:
        per_kind = settings.model_copy(update={"counterfactual": kind})
        records: list[dict[str, Any]] = []
        try:
            pairs, looked_at[kind] = choose_pairs(lm, per_kind, shots)
            grid = compute_grid(lm, per_kind, pairs, shots, on_pair=records.append).grid
        except ModelError as err:  # this kind has no usable pair: the others still count
            skipped[kind] = str(err)
            print(f"warning: {kind}: {err}", file=sys.stderr)
            continue
        by_text = {(p.original.text, p.counterfactual.text): p for p in pairs}
        patched = [by_text[(r["original"], r["counterfactual"])] for r in records]
        roles, layers = grid.labels["role"], grid.labels["layer"]
        predictions, allowed = predictions_of(models, patched, roles)
        outputs = patched_outputs(records, candidates, (len(layers), len(roles)))
        frames.append(hypothesis_cells(kind, outputs, layers, roles, predictions, allowed, settings.iia_threshold))
        effects.append(effect_cells(kind, outputs, [candidates[r[CLEAN_PREDICTION]] for r in records], layers, roles,
                                    settings.iia_threshold))
        grids[kind], records_of[kind], settings_of[kind] = grid, records, per_kind.model_dump(mode="json")
        if not declarations:
            declarations = {name: {"describe": model.describe, "interventions": dict(model.interventions),
                                   "variables": model.table(patched[0].original)} for name, model in models.items()}
    if not grids:
        raise ModelError("no counterfactual kind could be patched: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    cells = pd.concat(frames, ignore_index=True)
    table = verdicts(cells, pd.concat(effects, ignore_index=True))
    return _Scored(kinds, grids, records_of, settings_of, looked_at, skipped, models, declarations, cells, table,
                   verdict_regions(table))


def _write(run: AnalysisRun, scored: _Scored) -> list[Path]:
    folder, files = run.tracker.folder, []
    for kind, grid in scored.grids.items():
        files += write_grid(grid, folder.analysis_grid(kind), scored.settings_of[kind])
        files.append(write_lines(folder.analysis_grid(kind) / PAIRS_FILE, scored.records[kind]))
    files.append(run.write_table("hypotheses_cells", scored.cells, HYPOTHESES_CELLS_FILE))
    files.append(run.write_table("verdicts", scored.verdicts, VERDICTS_FILE))
    files.append(run.write_table("verdict_regions", scored.regions, VERDICT_REGIONS_FILE))
    files.append(run.tracker.write_json(HYPOTHESES_FILE, {"task": run.settings.task, "hypotheses": scored.declarations}))
    title = f"{run.lm.name}: which hypothesis explains the patched output (IIA threshold {run.settings.iia_threshold})"
    files.append(run.write_figure("verdicts", verdict_panels(scored.verdicts, list(scored.models), title),
                                  VERDICTS_FIGURE_FILE))
    return files


def _summarize(run: AnalysisRun, scored: _Scored) -> dict[str, Any]:
    """Per kind the cells by verdict; per hypothesis the cells it explains alone and those (with an
    effect) where the data exclude it, as `role@layers` per kind, and their counts."""
    table, names = scored.verdicts, list(scored.models)
    by_kind = {}
    for kind, part in table.groupby("counterfactual", sort=False):
        counts = part["verdict"].value_counts()
        by_kind[kind] = {"pairs": int(scored.grids[kind].n.max()),
                         "cells": {label: int(counts.get(label, 0)) for label in [*names, *VERDICT_LABELS]}}
    alone = {name: table["verdict"] == name for name in names}
    excluded = {name: excluded_mask(table, name) for name in names}
    return {"iia_threshold": run.settings.iia_threshold, "decision_rule": DECISION_RULE,
            "hypotheses": {name: model.describe for name, model in scored.models.items()},
            "counterfactuals": list(scored.grids), "pairs_looked_at": scored.looked_at, "skipped": scored.skipped,
            "verdicts": by_kind, "cells_explained_alone": {name: int(mask.sum()) for name, mask in alone.items()},
            "cells_excluded": {name: int(mask.sum()) for name, mask in excluded.items()},
            "explained_alone_where": {name: cells_where(table, mask) for name, mask in alone.items() if mask.any()},
            "excluded_where": {name: cells_where(table, mask) for name, mask in excluded.items() if mask.any()}}


HYPOTHESES = Analysis("hypotheses", _compute, _write, _summarize,
                      outcome=lambda run, s, summary: HypothesesOutcome(s.verdicts, s.regions, s.cells, s.grids, summary,
                                                                        run.tracker.out_dir),
                      check=_check_request, check_model=lambda settings, lm: check_layers(settings, lm.n_layers),
                      config=lambda settings: {"hypotheses_scored": list(chosen_hypotheses(settings))})


def run_hypotheses(settings: HypothesesSettings, cache: ModelCache = MODEL_CACHE) -> HypothesesOutcome:
    return run_analysis(HYPOTHESES, settings, cache)
