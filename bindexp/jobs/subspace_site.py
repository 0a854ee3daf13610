"""The subspace job's site: which layer (the best of an exact patch over the training pairs), the
whole residual patched there (the full-rank reference), and whether the site is the token the
counterfactual edits (there an interchange swaps the token's identity)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from bindexp.errors import BindexpError
from bindexp.interventions.engine.plan import GridPlan, TokenizedPair
from bindexp.interventions.methods.exact import patch_cells
from bindexp.stats import DOES_NOT, decide

VALUE_LEFT_THRESHOLD = 0.5  # the whole residual's held-out IIA below this (by its interval): the value has left


def subplan(plan: GridPlan, pairs) -> GridPlan:
    """The plan restricted to the tokenized pairs behind `pairs` (SitePairs)."""
    texts = {p.texts for p in pairs}
    return dataclasses.replace(plan, tokenized=[t for t in plan.tokenized
                                                if (t.pair.original.text, t.pair.counterfactual.text) in texts])


def resid_patch(plan: GridPlan, role: str, layers: list[int], batch_size: int):
    """The exact resid_pre patch grid restricted to `role`'s column at `layers`."""
    return patch_cells(plan, only={(layer, role) for layer in layers}, cells_per_forward=batch_size)


def resid_patch_hits(plan: GridPlan, role: str, layer: int, batch_size: int) -> tuple[int, int]:
    """(pairs whose prediction becomes the counterfactual answer when the whole residual entering
    `layer` at `role` is patched from the counterfactual run, pairs measured there)."""
    grid = resid_patch(plan, role, [layer], batch_size)
    cell = (grid.labels["layer"].index(layer), grid.labels["role"].index(role))  # the grid keeps every layer
    n = int(grid.counts["iia"][cell])
    return (int(round(float(grid.mean["iia"][cell]) * n)) if n else 0), n


def best_layer(plan: GridPlan, role: str, batch_size: int) -> int:
    """The layer where patching `role`'s residual moves the output most (mean normalized effect)."""
    grid = resid_patch(plan, role, plan.layers, batch_size)
    effects = grid.mean["normalized_effect"][:, grid.labels["role"].index(role)]
    if not np.isfinite(effects).any():
        raise BindexpError(f"patching {role} moves no training pair's output: give --layer")
    return grid.labels["layer"][int(np.nanargmax(effects))]


def edited_token_note(tokenized: Sequence[TokenizedPair], role: str, full_hits: int, full_n: int) -> dict[str, Any]:
    """Is the site the token the counterfactual edits (its token differs between the two prompts of
    every pair)? There, interchanging any subspace that holds the token's identity changes the
    input token itself, until the value has left the token: when patching the whole residual there
    no longer moves the output (its IIA does not carry at 0.5 by the interval rule)."""
    edited = sum(t.ids[t.roles[role]] != t.cf_ids[t.roles[role]] for t in tokenized if role in t.roles)
    at_edited = bool(tokenized) and edited == len(tokenized)
    left = decide(full_hits, full_n, VALUE_LEFT_THRESHOLD) == DOES_NOT
    out: dict[str, Any] = {"at_edited_token": at_edited and not left, "site_token_edited_in_pairs": int(edited)}
    if at_edited and not left:
        out["edited_token_note"] = (f"the site is the token the counterfactual edits ({role}) and patching its whole "
                                    "residual here still moves the output: an interchange swaps the token's identity, so "
                                    "any subspace holding that identity passes; compare the difference-PCA control and "
                                    "the shares before reading a 'value subspace' into it")
    elif at_edited:
        out["edited_token_note"] = (f"the site is the token the counterfactual edits ({role}), but patching its whole "
                                    "residual here no longer moves the output: the value has left the token")
    return out
