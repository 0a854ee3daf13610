"""Exact patching over many pairs: layers x (roles or positions) [x heads], averaged with 95% CIs.

    grid = patch_grid(lm, pairs, site="resid_pre", shots=shots)
    grid.to_frame(); grid.plot()

Pairs stream through in chunks: each chunk is prepared (clean + counterfactual runs), its cells
are patched, its per-pair values are added to running sums and optionally handed to a sink
(`on_pair`: the run streams them to its pairs file), and the chunk is dropped, so memory does not
grow with the number of pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from bindexp.interventions.engine.patching import Cell, Source, forward_batches, patched_logits
from bindexp.interventions.engine.plan import GridPlan, plan_grid
from bindexp.interventions.engine.prepared import PreparedPair, prepare_pairs
from bindexp.interventions.methods import MethodOptions, MethodResult
from bindexp.interventions.results.grid import Grid
from bindexp.interventions.results.metrics import METRICS, cell_metrics, predicted_candidate
from bindexp.models.loading import LoadedModel
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.program import Program
from bindexp.vocab import NOT_RUN

PREDICTION = "prediction"  # a pair record's key: per cell, the index of the candidate the patched run ranks first
CLEAN_PREDICTION = "clean_prediction"  # ... and the index of the candidate the clean run ranks first


def exact_method(plan: GridPlan, options: MethodOptions) -> MethodResult:
    """Write the counterfactual run's value into the clean run, cell by cell."""
    return MethodResult(patch_cells(plan, cells_per_forward=options.cells_per_forward,
                                    pairs_per_chunk=options.pairs_per_chunk, on_pair=options.on_pair,
                                    progress=options.progress, min_gap=options.min_gap))


def patch_grid(
    lm: LoadedModel,
    pairs: Sequence[CounterfactualPair],
    *,
    site: str = "resid_pre",
    shots: Sequence[Program] = (),
    template: str = "raw",
    columns: str = "roles",
    layers: Sequence[int] | None = None,
    **driver: Any,
) -> Grid:
    """Exact patching of every (layer, column[, head]) cell for every pair, averaged.

    driver: `patch_cells`'s keywords: cells_per_forward, pairs_per_chunk, on_pair, progress, and
    only (restrict to these cells, given as label tuples (layer, column[, head]); others are NaN).
    """
    plan = plan_grid(lm, pairs, site=site, shots=shots, template=template, columns=columns, layers=layers)
    return patch_cells(plan, **driver)


def patch_cells(
    plan: GridPlan,
    *,
    source: Source = "counterfactual",
    unchanged_before_edit: bool = True,
    cells_per_forward: int = 32,
    pairs_per_chunk: int = 8,
    on_pair: Callable[[dict[str, Any]], None] | None = None,
    only: Collection[tuple] | None = None,
    progress: bool = False,
    min_gap: float = 0.0,
) -> Grid:
    """The driver: patch the plan's cells with `source`'s values, chunk by chunk, and average.

    unchanged_before_edit: cells before the pair's first differing token are known to equal the
    clean run and are not run (true whenever the source is the counterfactual run).
    min_gap: pairs whose clean-to-counterfactual logit gap |LD_cf - LD_clean| is below it are
    left out before any cell is patched (counted in `info["excluded_small_gap"]`).
    The grid also holds `normalized_effect_median`: the per-cell median over pairs (no interval).
    """
    from tqdm.auto import tqdm

    lm, site = plan.lm, plan.site
    tokenized, labels, column_map, layers, heads = plan.tokenized, plan.labels, plan.column_map, plan.layers, plan.heads
    accumulator = plan.accumulator(METRICS)
    per_pair = len(layers) * len(labels) * len(heads or [None])  # cells of a pair, at most
    bar = _ForwardBar(tqdm, len(tokenized), per_pair, cells_per_forward, progress, site)
    n_cells, excluded, effects = 0, [], []
    not_run = np.zeros(accumulator.pairs.shape, dtype=int)  # per cell: pairs it was not run for
    for at in range(0, len(tokenized), pairs_per_chunk):
        bar.phase("preparing pairs (clean + counterfactual runs)")
        chunk = prepare_pairs(lm, site, tokenized[at : at + pairs_per_chunk], plan.prefix)
        bar.prepared(len(chunk))
        prepared = len(chunk)
        excluded += [at + i for i, pair in enumerate(chunk) if abs(pair.ld_cf - pair.ld_clean) < min_gap]
        chunk = [pair for pair in chunk if abs(pair.ld_cf - pair.ld_clean) >= min_gap]
        cells, where, untouched = [], [], []
        for index, pair in enumerate(chunk):
            for col, position in column_map(pair.tokens).items():
                for li, layer in enumerate(layers):
                    for head in heads or [None]:
                        label = (layer, col) if head is None else (layer, col, head)
                        if only is not None and label not in only:
                            continue
                        place = (index, li, labels.index(col), head)
                        if unchanged_before_edit and position < pair.tokens.first_diff:
                            untouched.append(place)  # both runs are identical there: no change
                        else:
                            cells.append(Cell(index, layer, (position,), head))
                            where.append(place)
        for _, li, ci, head in untouched:
            not_run[(li, ci) if head is None else (li, ci, head)] += 1
        bar.phase(f"patching {site} cells")
        bar.planned(prepared, len(cells), len(forward_batches(cells, cells_per_forward)))
        if not chunk:
            continue
        logits = patched_logits(lm, site, chunk, cells, source=source, cells_per_forward=cells_per_forward,
                                on_forward=bar.cells_done)
        n_cells += len(cells)
        for index, pair in enumerate(chunk):
            values = _pair_values(pair, accumulator.pairs.shape, logits, where, untouched, index)
            prediction = values.pop(PREDICTION)
            accumulator.add(values)
            effects.append(values["normalized_effect"])
            if on_pair is not None:
                on_pair(pair_record(pair, values, prediction))
    bar.close()
    grid = accumulator.grid(info={"site": site, "pairs": len(tokenized), "dropped": plan.dropped,
                                  "patched_cells": n_cells, "shared_prefix_tokens": plan.start,
                                  "excluded_small_gap": len(excluded), "excluded_pairs": excluded, "min_gap": min_gap,
                                  **plan.head_info()})
    grid.counts[NOT_RUN] = not_run  # the heatmap hatches cells no pair ran
    attach_metric(grid, "normalized_effect_median", _nanmedian(effects, grid.n.shape),
                  grid.counts.get("normalized_effect"))
    return grid


def _nanmedian(arrays: list[np.ndarray], shape) -> np.ndarray:
    if not arrays:
        return np.full(shape, np.nan)
    stacked = np.stack(arrays)
    present = ~np.isnan(stacked).all(axis=0)
    out = np.full(shape, np.nan)
    out[present] = np.nanmedian(stacked[:, present], axis=0)
    return out


def attach_metric(grid: Grid, name: str, values: np.ndarray, counts: np.ndarray | None = None) -> None:
    """Add a per-cell statistic that has no interval (a median, a noise floor) to `grid`."""
    grid.mean[name] = np.asarray(values, dtype=float)
    grid.ci_low[name] = np.full(grid.n.shape, np.nan)
    grid.ci_high[name] = np.full(grid.n.shape, np.nan)
    if counts is not None:
        grid.counts[name] = np.asarray(counts, dtype=int)


class _ForwardBar:
    """Progress of the exact driver in forwards (one per pair to prepare it, one per batch of
    cells), so the bar moves during every phase; the total is re-estimated after each chunk from
    the cells its pairs really needed (cells before the edit are not run), so tqdm's remaining
    time follows the real work."""

    def __init__(self, tqdm: Any, pairs: int, cells_per_pair: int, cells_per_forward: int, show: bool, site: str):
        self.pairs_left, self.cells_per_forward = pairs, max(1, cells_per_forward)
        self.cells_per_pair = cells_per_pair
        self.bar = tqdm(total=self._estimate(), disable=not show, desc=f"patching {site}", unit="forward")

    def _estimate(self) -> float:
        return self.pairs_left * (1 + self.cells_per_pair / self.cells_per_forward)

    def phase(self, text: str) -> None:
        self.bar.set_description(text, refresh=True)

    def prepared(self, pairs: int) -> None:
        self.bar.update(pairs)

    def planned(self, pairs: int, cells: int, forwards_now: int) -> None:
        """This chunk's pairs need `cells` cells in `forwards_now` forwards: re-estimate the total."""
        self.cells_per_pair = cells / max(1, pairs)
        self.pairs_left -= pairs
        self.bar.total = round(self.bar.n + forwards_now + self._estimate())
        self.bar.refresh()

    def cells_done(self, cells: int) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _pair_values(pair: PreparedPair, shape, logits, where, untouched, index) -> dict[str, np.ndarray]:
    """The pair's metric arrays, and under PREDICTION the patched prediction (the candidate's
    index): patched cells computed, untouched cells equal to the clean run, NaN for cells the
    pair does not have."""
    values = {m: np.full(shape, np.nan) for m in (*METRICS, PREDICTION)}

    def fill(places, metrics, rows):
        for k, (_, li, ci, head) in zip(rows, places):
            cell = (li, ci) if head is None else (li, ci, head)
            for m in (*METRICS, PREDICTION):
                values[m][cell] = float(metrics[m][k])

    mine = [i for i, w in enumerate(untouched) if w[0] == index]
    clean = cell_metrics(pair.clean_logits[None], pair.tokens.answer, pair.clean_logits, pair.ld_cf)
    clean[PREDICTION] = predicted_candidate(pair.clean_logits[None], pair.tokens.answer)
    fill([untouched[i] for i in mine], clean, [0] * len(mine))
    rows = [i for i, w in enumerate(where) if w[0] == index]
    if rows:
        patched = cell_metrics(logits[rows], pair.tokens.answer, pair.clean_logits, pair.ld_cf)
        patched[PREDICTION] = predicted_candidate(logits[rows], pair.tokens.answer)
        fill([where[i] for i in rows], patched, range(len(rows)))
    return values


def pair_record(pair: PreparedPair, values: dict[str, np.ndarray], prediction: np.ndarray | None = None
                ) -> dict[str, Any]:
    """One pair's own values (JSON-able, NaN as None): what a run streams to its pairs file; with
    `prediction`, also each cell's patched prediction as the index of the candidate answer (and the
    clean run's)."""
    record = {**pair.tokens.pair.to_dict(), "ld_clean": pair.ld_clean, "ld_cf": pair.ld_cf,
              **{m: np.where(np.isnan(v), None, v).tolist() for m, v in values.items()}}
    if prediction is not None:
        record[PREDICTION] = np.where(np.isnan(prediction), None, prediction).tolist()
        record[CLEAN_PREDICTION] = int(predicted_candidate(pair.clean_logits[None], pair.tokens.answer)[0])
    return record
