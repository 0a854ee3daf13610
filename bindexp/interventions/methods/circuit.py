"""Circuits: a set of edges of the graph, with faithfulness and minimality (Hanna et al. 2024's
definitions).

    chosen = choose_edges(scores, top_n=20)                  # or threshold=0.05
    result = circuit_faithfulness(plan, chosen, minimality=True)
    result.faithfulness, result.complement, result.minimality

Running a circuit: the graph forward of the clean prompt in which every receiver's input is the sum
over its senders of the sender's output *in this same run* where the edge is in the circuit, and of
the sender's output in the counterfactual run where it is not (edges outside the circuit are patched
to the counterfactual). Per pair,
    faithfulness = (LD_circuit - LD_cf) / (LD_clean - LD_cf)
(1: the circuit alone carries the clean behaviour; 0: no more than the counterfactual run), and the
complement's the same with only the edges outside the circuit kept. The full graph gives the clean
run (1), the empty graph the counterfactual run (0). Minimality (circuits of at most
`MINIMALITY_MAX_EDGES` edges): per edge, the faithfulness lost when that edge alone is removed from
the circuit. Means over pairs with 95% Student-t intervals and n.

Computed with `EdgeMix` in the cheaper of its two forms: a circuit (and each circuit less one edge)
reads the counterfactual residual plus its kept edges' differences; the complement reads this
run's residual minus the circuit's edges' differences.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

import numpy as np
import torch

from bindexp.interventions.engine.graph import Graph
from bindexp.interventions.engine.graph_forward import EdgeMix, GraphParts, PrefixState, graph_forward
from bindexp.interventions.engine.graph_runs import PairRuns, pair_runs, token_embeds
from bindexp.interventions.engine.plan import GridPlan
from bindexp.interventions.results.grid import Grid
from bindexp.interventions.results.metrics import logit_diff
from bindexp.stats import sample_interval

MINIMALITY_MAX_EDGES = 50
ROWS_PER_FORWARD = 16


def choose_edges(scores: Grid, *, top_n: int | None = None, threshold: float | None = None,
                 metric: str = "normalized_effect") -> list[str]:
    """The circuit: the edges whose |mean score| reaches `threshold`, or the `top_n` largest, largest first."""
    values = np.abs(np.nan_to_num(scores.mean[metric], nan=0.0))
    order = np.argsort(-values, kind="stable")
    if threshold is not None:
        order = [i for i in order if values[i] >= threshold]
    elif top_n is not None:
        order = order[:top_n]
    return [scores.labels["edge"][i] for i in order]


def edge_indices(graph: Graph, names: Sequence[str]) -> list[tuple[int, int]]:
    """`sender->receiver` names to (node, receiver) indices."""
    out = []
    for name in names:
        sender, receiver = name.split("->")
        out.append((graph.node_index[sender], graph.receiver_index[receiver]))
    return out


def circuit_lds(parts: GraphParts, runs: PairRuns, circuits: Sequence[Collection[tuple[int, int]]], *,
                complement: bool = False, prefix: PrefixState | None = None) -> np.ndarray:
    """LD of the clean prompt run as each circuit (complement=True: as each circuit's complement)."""
    graph = parts.graph
    embeds = token_embeds(parts, runs.tokens.ids, runs.start)
    out = []
    for at in range(0, len(circuits), ROWS_PER_FORWARD):
        chunk = circuits[at : at + ROWS_PER_FORWARD]
        coef = torch.zeros(len(chunk), len(graph.nodes), len(graph.receivers), dtype=embeds.dtype)
        for row, edges in enumerate(chunk):
            for s, r in edges:
                coef[row, s, r] = -1.0 if complement else 1.0
        mix = EdgeMix(runs.cf, coef, base="run" if complement else "reference")
        with torch.no_grad():
            run = graph_forward(parts, embeds.expand(len(chunk), -1, -1), prefix=prefix, mix=mix)
        out.append(logit_diff(run.logits.float(), runs.tokens.answer).cpu().numpy())
    return np.concatenate(out).astype(float)


def faithfulness(ld: np.ndarray, ld_clean: float, ld_cf: float) -> np.ndarray:
    return (np.asarray(ld) - ld_cf) / (ld_clean - ld_cf)


@dataclasses.dataclass
class CircuitResult:
    """Per pair and pooled: the circuit's and its complement's faithfulness, each edge's minimality."""

    edges: list[str]
    per_pair: dict[str, np.ndarray]  # faithfulness, complement: [pairs]; minimality: [pairs, edges]
    excluded_pairs: list[int]

    def interval(self, key: str) -> dict[str, float]:
        mean, low, high, n = sample_interval(self.per_pair[key][:, None], axis=0)
        return {"mean": float(mean[0]), "ci_low": float(low[0]), "ci_high": float(high[0]), "n": int(n[0])}

    def minimality(self) -> list[dict[str, float]]:
        """Per edge: the faithfulness lost when it alone is removed (mean, interval, n)."""
        if "minimality" not in self.per_pair:
            return []
        mean, low, high, n = sample_interval(self.per_pair["minimality"], axis=0)
        return [{"edge": edge, "mean": float(m), "ci_low": float(a), "ci_high": float(b), "n": int(c)}
                for edge, m, a, b, c in zip(self.edges, mean, low, high, n)]


def circuit_faithfulness(plan: GridPlan, edges: Sequence[str], *, minimality: bool = True, min_gap: float = 0.0,
                         progress: bool = False) -> CircuitResult:
    """Faithfulness of the circuit `edges` and of its complement over the plan's pairs; with
    `minimality` (and at most MINIMALITY_MAX_EDGES edges) each edge's share of it."""
    from tqdm.auto import tqdm

    parts = GraphParts.of(plan.lm)
    graph = parts.graph
    chosen = edge_indices(graph, edges)
    prefix = PrefixState.of(plan.prefix, graph.n_layers)
    with_minimality = minimality and 0 < len(chosen) <= MINIMALITY_MAX_EDGES
    rows: dict[str, list] = {"faithfulness": [], "complement": [], **({"minimality": []} if with_minimality else {})}
    excluded = []
    for index, item in enumerate(tqdm(plan.tokenized, disable=not progress, desc="circuit", unit="pair")):
        runs = pair_runs(parts, item, prefix)
        ld_clean, ld_cf = runs.ld_clean, runs.ld_cf
        if abs(ld_cf - ld_clean) < max(min_gap, 1e-6):
            excluded.append(index)
            continue
        circuits = [chosen] + ([[e for e in chosen if e != left] for left in chosen] if with_minimality else [])
        lds = circuit_lds(parts, runs, circuits, prefix=prefix)
        whole = faithfulness(lds[0], ld_clean, ld_cf)
        rows["faithfulness"].append(whole)
        rows["complement"].append(faithfulness(circuit_lds(parts, runs, [chosen], complement=True, prefix=prefix)[0],
                                               ld_clean, ld_cf))
        if with_minimality:
            rows["minimality"].append(whole - faithfulness(lds[1:], ld_clean, ld_cf))
    per_pair = {key: np.array(values, dtype=float) for key, values in rows.items()}
    if with_minimality and not rows["minimality"]:
        per_pair["minimality"] = np.zeros((0, len(chosen)))
    return CircuitResult(list(edges), per_pair, excluded)
