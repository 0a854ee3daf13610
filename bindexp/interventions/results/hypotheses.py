"""Competing hypotheses scored on the same patched outputs, and the verdict "which explains the model where".

Input, per counterfactual kind: every pair's patched prediction at every (layer, role) cell, and
every hypothesis's predicted output per pair for each of its variables (what the output would be
if the cell carried that variable: `CausalModel.predict_variable`), plus its clean output under
the pseudo-variable NONE (what a cell carrying none of its variables leaves: nothing changes).

- `hypothesis_cells`: per hypothesis x variable x cell, the IIA of the variable's prediction (the
  share of pairs whose patched output is the predicted one; a set-valued prediction, the
  heuristic's, is a hit when the output is any of it) with its Wilson interval, n, and the
  interval rule's decision (`bindexp.stats.decide`); `allowed` says whether the hypothesis lets
  that role carry that variable (its sites; NONE everywhere).
- `effect_cells`: per cell, the share of pairs whose patched output is the clean run's own (the
  patch changed nothing), with its interval and decision.
- `verdicts`: per kind x cell, `no effect` where the patched output stays the clean one (that
  share carries: every hypothesis may say the cell holds none of its variables, so such a cell
  tells none apart); elsewhere each hypothesis *carries* when one of its allowed variables (or
  NONE) carries, *does not* when every one does not, else is undetermined; the verdict names the
  hypothesis that carries while every other does not, `tie` when several carry (they predict the
  same outputs there), `undetermined` or `none` otherwise; a hypothesis that does not carry at a
  cell with an effect is *excluded* there.
- `verdict_regions`: the verdicts as runs of consecutive layers per (kind, role).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bindexp.interventions.results.summary import layer_ranges
from bindexp.stats import CARRIES, DOES_NOT, UNDETERMINED, decide, wilson_interval

NONE = "none"  # the pseudo-variable of a cell that carries none of a hypothesis's variables
TIE, NOT_DECIDED, NO_HYPOTHESIS, NO_EFFECT = "tie", "undetermined", "none", "no effect"
VERDICT_LABELS = (TIE, NOT_DECIDED, NO_HYPOTHESIS, NO_EFFECT)  # besides the hypotheses' own names


def matches(patched: str | None, predicted: Any) -> bool:
    """A patched output (the candidate's text) against a prediction (a value, or a set of acceptable values)."""
    if patched is None or predicted is None:
        return False
    if isinstance(predicted, (set, frozenset)):
        return patched in {str(value) for value in predicted}
    return patched == str(predicted)


def hypothesis_cells(kind: str, patched: np.ndarray, layers: Sequence[int], roles: Sequence[str],
                     predictions: Mapping[tuple[str, str, str], Sequence[Any]],
                     allowed: Mapping[tuple[str, str], set[str]], threshold: float) -> pd.DataFrame:
    """One row per (hypothesis, variable, layer, role). patched: [pairs, layers, roles] of the
    patched outputs' texts (None: the pair has no such cell); predictions[(hypothesis, variable,
    role)]: one predicted output per pair were that role's cell carrying the variable (None: the
    hypothesis predicts nothing for that pair, which then does not count); allowed[(hypothesis,
    variable)]: the roles that may carry it."""
    rows = []
    for (hypothesis, variable, role), predicted in predictions.items():
        ri = list(roles).index(role)
        defined = [i for i, p in enumerate(predicted) if p is not None]
        for li, layer in enumerate(layers):
            measured = [i for i in defined if patched[i, li, ri] is not None]
            hits = sum(matches(patched[i, li, ri], predicted[i]) for i in measured)
            low, high = wilson_interval(hits, len(measured))
            rows.append({"counterfactual": kind, "hypothesis": hypothesis, "variable": variable, "layer": layer,
                         "role": role, "n": len(measured), "hits": hits,
                         "iia": hits / len(measured) if measured else float("nan"), "iia_ci_low": low,
                         "iia_ci_high": high, "decision": decide(hits, len(measured), threshold),
                         "allowed": role in allowed[(hypothesis, variable)]})
    return pd.DataFrame(rows).sort_values(["hypothesis", "variable", "layer"], kind="stable", ignore_index=True)


def hypothesis_decision(decisions: Sequence[str]) -> str:
    """A hypothesis at a cell from its allowed variables' decisions: carries if one carries, does
    not if all do not, else undetermined."""
    if CARRIES in decisions:
        return CARRIES
    return DOES_NOT if decisions and all(d == DOES_NOT for d in decisions) else UNDETERMINED


def verdict_of(decided: Mapping[str, str]) -> str:
    """The verdict from each hypothesis's decision at a cell (see the module docstring)."""
    carrying = [name for name, d in decided.items() if d == CARRIES]
    if len(carrying) > 1:
        return TIE
    if len(carrying) == 1 and all(d == DOES_NOT for name, d in decided.items() if name != carrying[0]):
        return carrying[0]
    return NOT_DECIDED if any(d != DOES_NOT for d in decided.values()) else NO_HYPOTHESIS


def effect_cells(kind: str, patched: np.ndarray, clean: Sequence[str], layers: Sequence[int], roles: Sequence[str],
                 threshold: float) -> pd.DataFrame:
    """One row per (layer, role): the share of pairs whose patched output is the clean run's own
    (`unchanged`), its Wilson interval, n, and the interval rule's decision."""
    rows = []
    for li, layer in enumerate(layers):
        for ri, role in enumerate(roles):
            measured = [i for i in range(len(clean)) if patched[i, li, ri] is not None]
            hits = sum(patched[i, li, ri] == clean[i] for i in measured)
            low, high = wilson_interval(hits, len(measured))
            rows.append({"counterfactual": kind, "layer": layer, "role": role, "n": len(measured),
                         "unchanged": hits / len(measured) if measured else float("nan"), "unchanged_ci_low": low,
                         "unchanged_ci_high": high, "unchanged_decision": decide(hits, len(measured), threshold)})
    return pd.DataFrame(rows)


def verdicts(cells: pd.DataFrame, effects: pd.DataFrame) -> pd.DataFrame:
    """One row per (counterfactual, layer, role): the unchanged share (`effects`), each hypothesis's
    decision (a column per hypothesis), the verdict, the hypotheses that carry (`carrying`) and, at a
    cell with an effect, those excluded (`excluded`: they do not carry)."""
    rows = []
    allowed = cells[cells["allowed"]]
    names = list(dict.fromkeys(cells["hypothesis"]))
    effect = effects.set_index(["counterfactual", "layer", "role"])
    for (kind, layer, role), part in allowed.groupby(["counterfactual", "layer", "role"], sort=False):
        decided = {name: hypothesis_decision(list(part.loc[part["hypothesis"] == name, "decision"])) for name in names}
        unchanged = effect.loc[(kind, layer, role)]
        no_effect = unchanged["unchanged_decision"] == CARRIES
        rows.append({"counterfactual": kind, "layer": layer, "role": role, "n": int(unchanged["n"]),
                     "unchanged": unchanged["unchanged"], "unchanged_ci_low": unchanged["unchanged_ci_low"],
                     "unchanged_ci_high": unchanged["unchanged_ci_high"], **decided,
                     "verdict": NO_EFFECT if no_effect else verdict_of(decided),
                     "carrying": ", ".join(name for name, d in decided.items() if d == CARRIES),
                     "excluded": "" if no_effect else ", ".join(name for name, d in decided.items() if d == DOES_NOT)})
    return pd.DataFrame(rows)


def verdict_regions(table: pd.DataFrame) -> pd.DataFrame:
    """Consecutive layers with the same verdict (and the same carrying and excluded hypotheses) per
    (counterfactual, role): counterfactual, role, layers ("0-9"), verdict, carrying, excluded, cells."""
    rows = []
    for (kind, role), part in table.groupby(["counterfactual", "role"], sort=False):
        part = part.sort_values("layer")
        start = 0
        records = part.to_dict("records")
        for i in range(1, len(records) + 1):
            key = ("verdict", "carrying", "excluded")
            if i == len(records) or [records[i][k] for k in key] != [records[start][k] for k in key]:
                rows.append({"counterfactual": kind, "role": role,
                             "layers": layer_ranges([r["layer"] for r in records[start:i]]),
                             **{k: records[start][k] for k in key}, "cells": i - start})
                start = i
    return pd.DataFrame(rows)


def cells_where(table: pd.DataFrame, chosen: pd.Series) -> dict[str, str]:
    """counterfactual -> `role@layers; ...` of the chosen cells (a boolean mask over `table`'s rows)."""
    out = {}
    for kind, part in table[chosen].groupby("counterfactual", sort=False):
        out[kind] = "; ".join(f"{role}@{layer_ranges(sorted(group['layer']))}"
                              for role, group in part.groupby("role", sort=False))
    return out


def excluded_mask(table: pd.DataFrame, hypothesis: str) -> pd.Series:
    """The cells with an effect where `hypothesis` does not carry."""
    return table["excluded"].str.split(", ").apply(lambda names: hypothesis in names)
