"""Patch grids over many pairs: layers x (roles or positions) [x heads], averaged with 95% CIs.

    grid = patch_grid(lm, pairs, site="resid_pre", shots=shots)
    grid.to_frame(); grid.plot()

Pairs stream through in chunks: each chunk is prepared (clean + counterfactual runs), its cells
are patched, its per-pair values are added to running sums and optionally appended to a JSONL
file, and the chunk is dropped, so memory does not grow with the number of pairs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np

from bindexp.interventions.grid import Grid, GridAccumulator
from bindexp.interventions.metrics import METRICS, cell_metrics
from bindexp.interventions.pairs import PreparedPair, TokenizedPair, prepare_pairs, shared_prefix_length, tokenize_pairs
from bindexp.interventions.patching import Cell, patched_logits
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel, ModelError
from bindexp.models.sites import SITES, SiteMap
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.program import Program

ColumnMap = Callable[[TokenizedPair], dict[str, int]]


def role_columns(hops: int) -> list[str]:
    """Grid columns in reading order: the chain line by line, a distractor constant, the query."""
    columns = ["chain1_lhs", "root_value"]
    for depth in range(2, hops + 1):
        columns += [f"chain{depth}_lhs", f"chain{depth}_rhs"]
    return columns + ["distractor1_value", "query_var", "final"]


def grid_columns(tokenized: Sequence[TokenizedPair], mode: str) -> tuple[str, list, ColumnMap]:
    if mode == "roles":
        hops = max(t.pair.original.meta["hops"] for t in tokenized)
        labels = role_columns(hops)
        return "role", labels, lambda t: {c: t.roles[c] for c in labels if c in t.roles}
    if mode == "positions":
        width = max(len(t.ids) - t.program_start for t in tokenized)
        labels = list(range(width))
        return "position", labels, lambda t: {c: t.program_start + c for c in labels
                                              if t.program_start + c < len(t.ids)}
    raise ModelError(f"columns must be 'roles' or 'positions', got {mode!r}")


@dataclasses.dataclass
class GridPlan:
    """What every grid method needs before its first forward: tokens, axes, the shared prefix."""

    tokenized: list[TokenizedPair]
    dropped: list[str]
    axis: str  # "role" or "position"
    labels: list
    column_map: ColumnMap
    layers: list[int]
    heads: list[int] | None
    start: int  # shared prefix length
    prefix: SharedPrefix | None

    def accumulator(self, metrics: Sequence[str]) -> GridAccumulator:
        axes = ("layer", self.axis) + (("head",) if self.heads else ())
        labels = {"layer": self.layers, self.axis: self.labels, **({"head": self.heads} if self.heads else {})}
        accumulator = GridAccumulator(axes, labels, metrics)
        first = self.column_map(self.tokenized[0])
        accumulator.token_labels = [self.tokenized[0].tokens[first[c]] if c in first else "" for c in self.labels]
        return accumulator


def plan_grid(lm: LoadedModel, pairs: Sequence[CounterfactualPair], *, site: str, shots: Sequence[Program],
              template: str, columns: str, layers: Sequence[int] | None = None) -> GridPlan:
    """Check the request, tokenize the pairs, and compute the shared prefix's cache once."""
    if site not in SITES:
        raise ModelError(f"unknown site {site!r}; known sites: {', '.join(SITES)}")
    sites = SiteMap.of(lm.model, lm.family)
    layers = list(range(sites.n_layers)) if layers is None else list(layers)
    if not layers or min(layers) < 0 or max(layers) >= sites.n_layers:
        raise ModelError(f"layers must lie in 0..{sites.n_layers - 1}, got {layers}")
    tokenized, dropped = tokenize_pairs(lm, pairs, shots, template)
    if not tokenized:
        raise ModelError("no pair is left to patch" + (f" ({dropped[0]})" if dropped else ""))
    axis, labels, column_map = grid_columns(tokenized, columns)
    start = shared_prefix_length(tokenized)
    prefix = SharedPrefix(lm.model, tokenized[0].ids[:start]) if start else None
    heads = list(range(sites.n_heads)) if site == "head" else None
    return GridPlan(tokenized, dropped, axis, labels, column_map, layers, heads, start, prefix)


def patch_grid(
    lm: LoadedModel,
    pairs: Sequence[CounterfactualPair],
    *,
    site: str = "resid_pre",
    shots: Sequence[Program] = (),
    template: str = "raw",
    columns: str = "roles",
    layers: Sequence[int] | None = None,
    cells_per_forward: int = 32,
    pairs_per_chunk: int = 8,
    stream_path: Path | None = None,
    only: Collection[tuple] | None = None,
    progress: bool = False,
) -> Grid:
    """Exact patching of every (layer, column[, head]) cell for every pair, averaged.

    only: restrict to these cells, given as label tuples (layer, column[, head]); others are NaN.
    """
    from tqdm.auto import tqdm

    plan = plan_grid(lm, pairs, site=site, shots=shots, template=template, columns=columns, layers=layers)
    tokenized, labels, column_map, layers, heads = plan.tokenized, plan.labels, plan.column_map, plan.layers, plan.heads
    accumulator = plan.accumulator(METRICS)
    start, prefix = plan.start, plan.prefix
    bar = tqdm(total=len(tokenized), disable=not progress, desc=f"patching {site}", unit="pair")
    n_cells = 0
    for at in range(0, len(tokenized), pairs_per_chunk):
        chunk = prepare_pairs(lm, site, tokenized[at : at + pairs_per_chunk], prefix)
        cells, where, untouched = [], [], []
        for index, pair in enumerate(chunk):
            for col, position in column_map(pair.tokens).items():
                for li, layer in enumerate(layers):
                    for head in heads or [None]:
                        label = (layer, col) if head is None else (layer, col, head)
                        if only is not None and label not in only:
                            continue
                        place = (index, li, labels.index(col), head)
                        if position < pair.tokens.first_diff:
                            untouched.append(place)  # both runs are identical there: no change
                        else:
                            cells.append(Cell(index, layer, (position,), head))
                            where.append(place)
        logits = patched_logits(lm, site, chunk, cells, cells_per_forward=cells_per_forward)
        n_cells += len(cells)
        for index, pair in enumerate(chunk):
            values = _pair_values(pair, accumulator.pairs.shape, logits, where, untouched, index)
            accumulator.add(values)
            if stream_path is not None:
                _append(stream_path, pair, values)
        bar.update(len(chunk))
    bar.close()
    return accumulator.grid(info={"site": site, "pairs": len(tokenized), "dropped": plan.dropped,
                                  "patched_cells": n_cells, "shared_prefix_tokens": start})


def _pair_values(pair: PreparedPair, shape, logits, where, untouched, index) -> dict[str, np.ndarray]:
    """The pair's metric arrays: patched cells computed, untouched cells equal to the clean run,
    NaN for cells the pair does not have."""
    values = {m: np.full(shape, np.nan) for m in METRICS}

    def fill(places, metrics, rows):
        for k, (_, li, ci, head) in zip(rows, places):
            cell = (li, ci) if head is None else (li, ci, head)
            for m in METRICS:
                values[m][cell] = float(metrics[m][k])

    mine = [i for i, w in enumerate(untouched) if w[0] == index]
    clean = cell_metrics(pair.clean_logits[None], pair.tokens.answer, pair.clean_logits, pair.ld_cf)
    fill([untouched[i] for i in mine], clean, [0] * len(mine))
    rows = [i for i, w in enumerate(where) if w[0] == index]
    if rows:
        patched = cell_metrics(logits[rows], pair.tokens.answer, pair.clean_logits, pair.ld_cf)
        fill([where[i] for i in rows], patched, range(len(rows)))
    return values


def _append(path: Path, pair: PreparedPair, values: dict[str, np.ndarray]) -> None:
    record = {**pair.tokens.pair.to_dict(), "ld_clean": pair.ld_clean, "ld_cf": pair.ld_cf,
              **{m: np.where(np.isnan(v), None, v).tolist() for m, v in values.items()}}
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")

