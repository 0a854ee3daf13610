"""Path patching: a sender's counterfactual output seen only through a set of receivers.

    grids = path_patch(plan, ["q:23.0", "v:23.0", "logits"])      # one grid per receiver set
    grids["logits"].mean["normalized_effect"][grid.labels["sender"].index("23.0")]

For a pair and a sender s (`embed`, a head `L.H`, an `mlp L`; graph of
`bindexp.interventions.engine.graph`), delta_s = s's output in the counterfactual run minus the
clean run's. The receivers of the set read their clean input plus delta_s; every other receiver
reads s's clean output; everything downstream of the receivers is recomputed normally. Then
normalized effect = (LD_patched - LD_clean) / (LD_cf - LD_clean), per pair, averaged with 95%
intervals over pairs.

What runs (the exact engine, `bindexp.interventions.engine.patching`, nothing done twice):
- q, k or v of heads at layer L: the receivers' new queries / keys / values are computed from
  clean + delta_s with the model's own norm, convolution and projection (`GraphParts.project`) and
  written into the q/k/v site; layers before L are skipped (the clean residual enters L), positions
  before s's first non-zero delta come from the cropped clean cache, and cells of every pair and
  sender share forwards;
- mlp L: the MLP's output on clean + delta_s written at mlp_out of layer L (same skipping);
- logits: no forward at all: unembed(final_norm(clean final residual + delta_s)).
A sender whose delta is 0 everywhere leaves the clean logits (not run). Only senders before the
receivers are in a grid: a later node has no edge into them (its effect is 0 by construction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from bindexp.interventions.engine.graph import ReceiverSet
from bindexp.interventions.engine.graph_forward import GraphParts, PrefixState
from bindexp.interventions.engine.graph_runs import PairRuns, pair_runs
from bindexp.interventions.engine.patching import Cell, patched_logits
from bindexp.interventions.engine.plan import GridPlan
from bindexp.interventions.engine.prepared import PreparedPair, prepare_pairs
from bindexp.interventions.results.grid import Grid, GridAccumulator
from bindexp.interventions.results.metrics import METRICS, cell_metrics, logit_diff

SENDER_CHUNK = 64  # senders whose receiver values are computed together
EXACT_EDGE_METRICS = ("normalized_effect", "ld_shift")


def set_senders(parts: GraphParts, receiver_set: ReceiverSet) -> list[int]:
    """The nodes before every receiver of the set (the grid's senders), in graph order."""
    graph = parts.graph
    return [s for s in range(len(graph.nodes)) if all(graph.feeds(s, r) for r in receiver_set.receivers)]


def receiver_values(parts: GraphParts, runs: PairRuns, receiver_set: ReceiverSet, senders: Sequence[int],
                    prefix: PrefixState | None) -> torch.Tensor:
    """What the set's site holds when its receivers read clean + delta_s: [senders, T', width]
    (q/k/v: the set's heads' features side by side; mlp: the MLP's output)."""
    graph, layer = parts.graph, receiver_set.layer
    stage = 2 * layer + (1 if receiver_set.kind == "mlp" else 0)
    read = runs.clean.points[stage][0] + runs.delta[list(senders)]  # [n, T', d]
    with torch.no_grad():
        if receiver_set.kind == "mlp":
            return parts.mlp_out(layer, read)
        heads = graph.set_heads(receiver_set)
        values = parts.project(layer, receiver_set.kind, read.unsqueeze(0).expand(len(heads), *read.shape), heads,
                               prefix)  # [n, heads, T', hd]
    return values.permute(0, 2, 1, 3).reshape(len(senders), read.shape[1], -1)


def final_logits(parts: GraphParts, runs: PairRuns, senders: Sequence[int]) -> torch.Tensor:
    """Logits with each sender's delta added to the final residual alone (its direct effect): [n, vocab]."""
    with torch.no_grad():
        return parts.logits(runs.clean.points[-1][0, -1] + runs.delta[list(senders), -1]).float()


def edge_logits(lm_parts: GraphParts, prepared: Sequence[PreparedPair], runs: Sequence[PairRuns],
                receiver_set: ReceiverSet, senders: Sequence[Sequence[int]], prefix: PrefixState | None, *,
                cells_per_forward: int = 32, on_forward: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """Per pair, the final logits with each of its `senders` path-patched into `receiver_set`:
    [len(senders[pair]), vocab]."""
    out = [pair.clean_logits.float().expand(len(chosen), -1).clone() for pair, chosen in zip(prepared, senders)]
    if receiver_set.kind == "logits":
        for index, (run, chosen) in enumerate(zip(runs, senders)):
            first = run.first_change()
            moving = [k for k, s in enumerate(chosen) if first[s] is not None]
            if moving:
                out[index][moving] = final_logits(lm_parts, run, [chosen[k] for k in moving])
        return out
    cells, values, where = [], [], []
    site = "mlp_out" if receiver_set.kind == "mlp" else receiver_set.kind
    head = None if receiver_set.kind == "mlp" else tuple(lm_parts.graph.set_heads(receiver_set))
    for index, (run, chosen) in enumerate(zip(runs, senders)):
        first = run.first_change()
        moving = [(k, s) for k, s in enumerate(chosen) if first[s] is not None]
        for at in range(0, len(moving), SENDER_CHUNK):
            part = moving[at : at + SENDER_CHUNK]
            computed = receiver_values(lm_parts, run, receiver_set, [s for _, s in part], prefix)
            for (k, s), value in zip(part, computed):
                positions = tuple(range(first[s], len(run.tokens.ids)))
                cells.append(Cell(index, receiver_set.layer, positions, head))
                values.append(value[first[s] - run.start :])
                where.append((index, k))
    if cells:
        logits = patched_logits(lm_parts.lm, site, prepared, cells, source=values, cells_per_forward=cells_per_forward,
                                on_forward=on_forward)
        for (index, k), row in zip(where, logits):
            out[index][k] = row
    return out


def pair_chunks(plan: GridPlan, parts: GraphParts, prefix: PrefixState | None, pairs_per_chunk: int,
                min_gap: float, excluded: list[int]) -> Iterator[tuple[list[PreparedPair], list[PairRuns], int]]:
    """The plan's pairs, a chunk at a time, prepared for the exact engine and run through the graph;
    pairs whose |LD_cf - LD_clean| is below `min_gap` are left out (their indices added to `excluded`);
    with the chunk's size before that."""
    for at in range(0, len(plan.tokenized), pairs_per_chunk):
        chunk = plan.tokenized[at : at + pairs_per_chunk]
        prepared = prepare_pairs(plan.lm, "resid_pre", chunk, plan.prefix)
        kept = [i for i, pair in enumerate(prepared) if abs(pair.ld_cf - pair.ld_clean) >= max(min_gap, 1e-6)]
        excluded += [at + i for i in range(len(chunk)) if i not in kept]
        prepared = [prepared[i] for i in kept]
        yield prepared, [pair_runs(parts, pair.tokens, prefix) for pair in prepared], len(chunk)


def path_patch(plan: GridPlan, specs: Sequence[str], *, cells_per_forward: int = 32, pairs_per_chunk: int = 8,
               min_gap: float = 0.0, progress: bool = False) -> dict[str, Grid]:
    """One grid per receiver set (spec) over its senders: the normalized effect and the other
    patching metrics (`bindexp.interventions.results.metrics`) with 95% intervals over pairs."""
    from tqdm.auto import tqdm

    parts = GraphParts.of(plan.lm)
    graph = parts.graph
    sets = {spec: graph.receiver_set(spec) for spec in specs}
    senders = {spec: set_senders(parts, receiver_set) for spec, receiver_set in sets.items()}
    accumulators = {spec: GridAccumulator(("sender",), {"sender": [graph.nodes[s].name for s in senders[spec]]},
                                          METRICS) for spec in specs}
    prefix = PrefixState.of(plan.prefix, graph.n_layers)
    excluded: list[int] = []
    cells = CellCount()
    bar = tqdm(total=len(plan.tokenized), disable=not progress, desc="path patching", unit="pair")
    for prepared, runs, size in pair_chunks(plan, parts, prefix, pairs_per_chunk, min_gap, excluded):
        for spec, receiver_set in sets.items():
            logits = edge_logits(parts, prepared, runs, receiver_set, [senders[spec]] * len(runs), prefix,
                                 cells_per_forward=cells_per_forward, on_forward=cells.update_by)
            for pair, rows in zip(prepared, logits):
                metrics = cell_metrics(rows, pair.tokens.answer, pair.clean_logits, pair.ld_cf)
                accumulators[spec].add({m: metrics[m].numpy().astype(float) for m in METRICS})
        bar.update(size)
    bar.close()
    return {spec: accumulator.grid(info={
        "method": "path_patch", "receiver_set": spec, "receivers": [graph.receivers[r].name for r in sets[spec].receivers],
        "serves": {graph.receivers[r].name: list(graph.receivers[r].serves) for r in sets[spec].receivers},
        "pairs": len(plan.tokenized), "dropped": plan.dropped, "excluded_small_gap": len(excluded),
        "excluded_pairs": excluded, "min_gap": min_gap, "shared_prefix_tokens": plan.start,
        "patched_cells": cells.total})
        for spec, accumulator in accumulators.items()}


def exact_edges(plan: GridPlan, edges: Sequence[tuple[int, int]], *, cells_per_forward: int = 32,
                pairs_per_chunk: int = 8, min_gap: float = 0.0, progress: bool = False) -> Grid:
    """Each edge (node, receiver) path-patched alone (its receiver the set): a grid over the axis
    "edge", metrics `normalized_effect` and `ld_shift` (LD_patched - LD_clean), 95% intervals."""
    from tqdm.auto import tqdm

    parts = GraphParts.of(plan.lm)
    graph = parts.graph
    edges = list(edges)
    by_receiver: dict[int, list[int]] = {}
    for index, (_, receiver) in enumerate(edges):
        by_receiver.setdefault(receiver, []).append(index)
    accumulator = GridAccumulator(("edge",), {"edge": [graph.edge_name(e) for e in edges]}, EXACT_EDGE_METRICS)
    prefix = PrefixState.of(plan.prefix, graph.n_layers)
    excluded: list[int] = []
    cells = CellCount()
    bar = tqdm(total=len(plan.tokenized), disable=not progress, desc="exact edges", unit="pair")
    for prepared, runs, size in pair_chunks(plan, parts, prefix, pairs_per_chunk, min_gap, excluded):
        shift = [np.full(len(edges), np.nan) for _ in runs]
        for receiver, indices in by_receiver.items():
            chosen = [edges[i][0] for i in indices]
            logits = edge_logits(parts, prepared, runs, graph.single(receiver), [chosen] * len(runs), prefix,
                                 cells_per_forward=cells_per_forward, on_forward=cells.update_by)
            for row, (pair, rows) in enumerate(zip(prepared, logits)):
                shift[row][indices] = (logit_diff(rows.float(), pair.tokens.answer) - pair.ld_clean).numpy()
        for pair, values in zip(prepared, shift):
            accumulator.add({"normalized_effect": values / (pair.ld_cf - pair.ld_clean), "ld_shift": values})
        bar.update(size)
    bar.close()
    return accumulator.grid(info={"method": "path_patch", "pairs": len(plan.tokenized), "excluded_small_gap": len(excluded),
                                  "excluded_pairs": excluded, "min_gap": min_gap, "patched_cells": cells.total})


class CellCount:
    """Cells run so far (an `on_forward` callback)."""

    def __init__(self) -> None:
        self.total = 0

    def update_by(self, cells: int) -> None:
        self.total += cells
