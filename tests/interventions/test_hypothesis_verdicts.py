"""Scoring competing hypotheses on patched outputs, by hand: IIA per variable and cell, the
no-effect cells, and the verdict by the interval rule."""

import numpy as np

from bindexp.interventions.results.hypotheses import (
    NONE,
    effect_cells,
    excluded_mask,
    hypothesis_cells,
    matches,
    verdict_of,
    verdict_regions,
    verdicts,
)
from bindexp.stats import CARRIES, DOES_NOT, UNDETERMINED

LAYERS, ROLES = [0, 1, 2], ["root", "final"]
N = 20


def _planted():
    """20 pairs, clean output "1". At `root`, every layer: the output becomes "2" (what hypothesis A's
    variable predicts and B's does not); at `final`: layer 0 unchanged, layer 1 "3" (B's prediction),
    layer 2 "3" for half the pairs, "1" for the rest."""
    patched = np.full((N, len(LAYERS), len(ROLES)), None, dtype=object)
    patched[:, :, 0] = "2"
    patched[:, 0, 1] = "1"
    patched[:, 1, 1] = "3"
    patched[:, 2, 1] = ["3"] * 10 + ["1"] * 10
    predictions = {("A", "v", role): [2] * N for role in ROLES}
    predictions.update({("B", "w", role): [3] * N for role in ROLES})
    predictions.update({(name, NONE, role): [1] * N for name in "AB" for role in ROLES})
    allowed = {("A", "v"): {"root", "final"}, ("B", "w"): {"final"}, ("A", NONE): set(ROLES), ("B", NONE): set(ROLES)}
    return patched, predictions, allowed


def test_iia_per_variable_and_cell_by_hand():
    patched, predictions, allowed = _planted()
    cells = hypothesis_cells("kind", patched, LAYERS, ROLES, predictions, allowed, 0.5).set_index(
        ["hypothesis", "variable", "layer", "role"])
    assert cells.loc[("A", "v", 1, "root"), "iia"] == 1.0 and cells.loc[("A", "v", 1, "root"), "n"] == N
    assert cells.loc[("B", "w", 2, "final"), "iia"] == 0.5
    assert cells.loc[("B", "w", 2, "final"), "decision"] == UNDETERMINED  # 10/20 decides nothing at 0.5
    assert cells.loc[("B", "w", 1, "final"), "decision"] == CARRIES
    assert cells.loc[("A", "v", 1, "final"), "decision"] == DOES_NOT
    assert not cells.loc[("B", "w", 0, "root"), "allowed"]  # B does not let `root` carry w


def test_verdicts_and_regions_by_hand():
    patched, predictions, allowed = _planted()
    cells = hypothesis_cells("kind", patched, LAYERS, ROLES, predictions, allowed, 0.5)
    effects = effect_cells("kind", patched, ["1"] * N, LAYERS, ROLES, 0.5)
    table = verdicts(cells, effects).set_index(["layer", "role"])
    assert table.loc[(0, "root"), "verdict"] == "A"  # only A predicts "2"; B's only variable there is none
    assert table.loc[(0, "root"), "excluded"] == "B"
    assert table.loc[(0, "final"), "verdict"] == "no effect"  # unchanged: every hypothesis may say so
    assert table.loc[(1, "final"), "verdict"] == "B"
    assert table.loc[(2, "final"), "verdict"] == "undetermined"
    regions = verdict_regions(table.reset_index())
    assert regions[regions["role"] == "root"][["layers", "verdict"]].values.tolist() == [["0-2", "A"]]
    assert excluded_mask(table.reset_index(), "B").sum() == 3 and excluded_mask(table.reset_index(), "A").sum() == 1


def test_verdict_rule_and_set_predictions():
    assert verdict_of({"A": CARRIES, "B": DOES_NOT}) == "A"
    assert verdict_of({"A": CARRIES, "B": CARRIES}) == "tie"
    assert verdict_of({"A": CARRIES, "B": UNDETERMINED}) == "undetermined"
    assert verdict_of({"A": DOES_NOT, "B": DOES_NOT}) == "none"
    assert matches("5", frozenset({3, 5})) and not matches("4", frozenset({3, 5}))
    assert matches("5", 5) and not matches(None, 5) and not matches("5", None)
