"""The locate job (job_type `locate`): for each variable of the task's declared causal model, where in
the model (layer x token role) interchanging it moves the output as the hypothesis predicts.

    outcome = run_locate(LocateSettings(model="smollm2-135m", hops=2, seq_len=6))
    outcome.table            # variable -> where (best cell; cells carrying it by the interval rule)
    outcome.grids["value"]   # the exact patch grid of that variable's pairs (metric "iia" ...)

Each counterfactual kind the causal model maps to a variable is one exact patch grid over that
kind's pairs (the patch runner's pair selection and grid, reused); pairs are grouped by the
variable they interchange (chain_link: the pointer of the hop it edits). A cell's IIA is the share
of pairs whose patched prediction is the output the causal model predicts -- which for every
binding kind is the counterfactual's answer, checked pair by pair before any patching -- with a
95% Wilson interval, and a decision by the interval rule (`bindexp.stats.decide`): the cell
carries the variable when the interval's lower bound reaches `iia_threshold`, does not when its
upper bound lies below it, and is undetermined otherwise (at n = 10, 5/10 decides nothing).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field, field_validator, model_validator

from bindexp.errors import InputError, ModelError, TaskError
from bindexp.interventions.results.grid import Grid, proportion_interval
from bindexp.interventions.results.summary import layer_ranges
from bindexp.io.folder import CAUSAL_MODEL_FILE, LOCATE_CELLS_FILE, LOCATE_FILE, LOCATE_HEATMAP_FILE, PAIRS_FILE
from bindexp.io.grids import write_grid
from bindexp.io.streams import write_lines
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.plots.analyses import iia_panels
from bindexp.runs.analysis import Analysis, AnalysisRun, run_analysis
from bindexp.runs.pairs import candidate_pairs, check_layers, choose_pairs
from bindexp.runs.patching import compute_grid
from bindexp.runs.settings import PairSettings, PatchMethodGroup, StrList, none_list
from bindexp.stats import CARRIES, DECISION_RULE, UNDETERMINED, decide
from bindexp.tasks.causal_model import CONTROL, CausalModel, causal_model, group_by_variable
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.registry import get_task
from bindexp.vocab import HEAD_SITES

IIA = "iia"


class LocateSettings(PatchMethodGroup, PairSettings):
    """`scripts/locate.py`: for each variable of the task's declared causal model, the (layer, role)
    cells where interchanging it (its counterfactual kind, exact patching at `site`) moves the
    output as the model predicts, with IIA and its Wilson interval."""

    counterfactuals: StrList | None = Field(None, description="kinds to run (None: every kind the causal model "
                                                              "maps to a variable that these settings allow)")
    iia_threshold: float = Field(0.5, gt=0, le=1, description="a cell carries a variable when the Wilson lower bound "
                                                              "of its IIA reaches this (upper bound below: it does "
                                                              "not; otherwise undetermined)")

    @field_validator("counterfactuals", mode="before")
    @classmethod
    def _none(cls, value):
        return none_list(value)

    @model_validator(mode="after")
    def _exact_role_grids(self) -> LocateSettings:
        if self.method != "exact" or self.site in HEAD_SITES or self.positions != "roles":
            raise ValueError("locate patches exact role grids: method=exact, positions=roles, a site not per head "
                             f"(not {', '.join(HEAD_SITES)})")
        return self


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
            if model.interventions[kind] == CONTROL:
                raise InputError(f"counterfactual {kind!r} is a control (the answer must not change), so it has "
                                 "no IIA to locate; scripts/patch.py reports its flip rate")
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


def variable_cells(variable: str, kind: str, grid: Grid, threshold: float) -> pd.DataFrame:
    """One row per (layer, role) of a variable's grid: IIA, its Wilson interval, pairs, and the
    interval rule's decision against `threshold` (`bindexp.stats.decide`)."""
    successes, low, high = proportion_interval(grid, IIA)
    rows = []
    for li, layer in enumerate(grid.labels["layer"]):
        for ci, role in enumerate(grid.labels["role"]):
            n = int(grid.counts[IIA][li, ci])
            rows.append({"variable": variable, "counterfactual": kind, "layer": layer, "role": role, "n": n,
                         IIA: float(grid.mean[IIA][li, ci]) if n else float("nan"),
                         "iia_ci_low": float(low[li, ci]), "iia_ci_high": float(high[li, ci]),
                         "decision": decide(int(successes[li, ci]), n, threshold)})
    return pd.DataFrame(rows)


def where_text(cells: pd.DataFrame) -> str:
    """`role@layers; role@layers` over the given cells, roles in their first-seen order."""
    return "; ".join(f"{role}@{layer_ranges(sorted(group['layer']))}" for role, group in cells.groupby("role", sort=False))


def locate_table(cells: pd.DataFrame, threshold: float, roles_of: dict[str, str]) -> pd.DataFrame:
    """Per variable: its best cell (highest IIA, earliest layer first) with the interval, and
    where = the layers per role whose IIA *carries* the variable by the interval rule (the Wilson
    lower bound reaches `threshold`); the cells the rule leaves undetermined are counted (and
    listed in `where_undetermined`), never counted as carrying."""
    rows = []
    for variable, part in cells.groupby("variable", sort=False):
        scored = part.dropna(subset=[IIA])
        best = scored.sort_values([IIA, "layer"], ascending=[False, True], kind="stable").iloc[0] \
            if not scored.empty else None
        carrying, undetermined = scored[scored["decision"] == CARRIES], scored[scored["decision"] == UNDETERMINED]
        rows.append({"variable": variable, "counterfactual": part["counterfactual"].iloc[0],
                     "variable_role": roles_of.get(variable), "pairs": int(part["n"].max()),
                     "best_layer": None if best is None else int(best["layer"]),
                     "best_role": None if best is None else best["role"],
                     IIA: None if best is None else float(best[IIA]),
                     "iia_ci_low": None if best is None else float(best["iia_ci_low"]),
                     "iia_ci_high": None if best is None else float(best["iia_ci_high"]),
                     "cells_carrying": len(carrying), "cells_undetermined": len(undetermined),
                     "where": where_text(carrying) or "-", "where_undetermined": where_text(undetermined) or "-"})
    return pd.DataFrame(rows)


def _check_request(settings: LocateSettings, shots) -> None:
    """Refuse, before any model loads, what no kind of the causal model can give."""
    kinds = locate_kinds(settings, causal_model(settings.task))
    if not kinds:
        raise InputError(f"no counterfactual kind of the {settings.task} causal model fits these settings")
    for kind in kinds:  # impossible requests fail here, before any model or W&B work
        candidate_pairs(settings.model_copy(update={"counterfactual": kind}), 1, shots)


@dataclasses.dataclass
class _Located:
    kinds: list[str]
    grids: dict[str, Grid]  # variable -> its exact patch grid
    pairs: dict[str, list[dict[str, Any]]]  # variable -> its pairs' own values (pairs.jsonl)
    settings_of: dict[str, dict[str, Any]]  # variable -> the settings its grid was patched with
    kind_of: dict[str, str]
    roles_of: dict[str, str | None]
    declaration: list[dict[str, str]]
    looked_at: dict[str, int]
    skipped: dict[str, str]
    cells: pd.DataFrame
    table: pd.DataFrame


def _compute(run: AnalysisRun) -> _Located:
    settings, lm, shots = run.settings, run.lm, run.shots
    model = causal_model(settings.task)
    kinds = locate_kinds(settings, model)
    grids, pairs_of, settings_of, kind_of, roles_of = {}, {}, {}, {}, {}
    declaration: list[dict[str, str]] = []
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
            records: list[dict[str, Any]] = []
            try:
                grids[variable] = compute_grid(lm, per_kind, group, shots, on_pair=records.append).grid
            except ModelError as err:  # e.g. every pair below min_gap
                skipped[variable] = str(err)
                print(f"warning: {variable} ({kind}): {err}", file=sys.stderr)
                continue
            pairs_of[variable], settings_of[variable] = records, per_kind.model_dump(mode="json")
            kind_of[variable] = kind
            roles_of[variable] = model.variable(group[0].original, variable).role if variable != CONTROL else None
    if not grids:
        raise ModelError("no variable could be located: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    cells = pd.concat([variable_cells(v, kind_of[v], g, settings.iia_threshold) for v, g in grids.items()],
                      ignore_index=True)
    return _Located(kinds, grids, pairs_of, settings_of, kind_of, roles_of, declaration, looked_at, skipped, cells,
                    locate_table(cells, settings.iia_threshold, roles_of))


def _write(run: AnalysisRun, located: _Located) -> list[Path]:
    model, folder = causal_model(run.settings.task), run.tracker.folder
    files: list[Path] = []
    for variable, grid in located.grids.items():
        files += write_grid(grid, folder.analysis_grid(variable), located.settings_of[variable])
        files.append(write_lines(folder.analysis_grid(variable) / PAIRS_FILE, located.pairs[variable]))
    files.append(run.write_table("locate", located.table, LOCATE_FILE))
    files.append(run.write_table("locate_cells", located.cells, LOCATE_CELLS_FILE))
    files.append(run.tracker.write_json(CAUSAL_MODEL_FILE, {"task": model.task, "describe": model.describe,
                                                            "interventions": dict(model.interventions),
                                                            "variables": located.declaration}))
    files.append(run.write_figure("locate_iia", iia_panels(located.grids, f"{run.lm.name}: IIA per variable"),
                                  LOCATE_HEATMAP_FILE))
    return files


def _summarize(run: AnalysisRun, located: _Located) -> dict[str, Any]:
    table = located.table
    return {"iia_threshold": run.settings.iia_threshold, "decision_rule": DECISION_RULE, "counterfactuals": located.kinds,
            "pairs_looked_at": located.looked_at, "skipped": located.skipped,
            "variables": {row["variable"]: {k: v for k, v in row.items() if k != "variable"}
                          for row in table.astype(object).where(table.notna(), None).to_dict("records")}}


LOCATE = Analysis("locate", _compute, _write, _summarize,
                  outcome=lambda run, m, summary: LocateOutcome(m.table, m.cells, m.grids, summary, run.tracker.out_dir),
                  check=_check_request, check_model=lambda settings, lm: check_layers(settings, lm.n_layers),
                  config=lambda settings: {"causal_model": causal_model(settings.task).describe})


def run_locate(settings: LocateSettings, cache: ModelCache = MODEL_CACHE) -> LocateOutcome:
    return run_analysis(LOCATE, settings, cache)
