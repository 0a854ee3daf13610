"""Edge attribution patching (EAP) and its integrated-gradients form (EAP-IG): every edge of the
graph (`bindexp.interventions.engine.graph`) scored from a few passes per pair.

    scores = edge_attribution(plan)                    # EAP
    scores = edge_attribution(plan, ig_steps=8)        # EAP-IG
    scores.mean["normalized_effect"][scores.labels["edge"].index("8.1->23.kv0 k")]

Score of an edge (sender s, receiver r) for one pair:
    sum over positions of delta_s . dLD/d(input of r)
with delta_s = s's output in the counterfactual run minus the clean run's and LD the logit
difference (`bindexp.interventions.results.metrics.logit_diff`: counterfactual answer minus
original answer). EAP takes the gradient at the clean run: one clean forward + backward of the
graph forward with every receiver input a leaf, one counterfactual forward. EAP-IG (Hanna et al.
2024, "Have faith in faithfulness") averages the gradient over `ig_steps` = K runs whose input
embeddings interpolate clean -> counterfactual at alpha = (k - 1/2)/K, k = 1..K (the midpoint rule),
plus the clean and counterfactual forwards for the deltas. The estimate of path patching s into r
alone; divided by the pair's gap LD_cf - LD_clean it estimates that edge's normalized effect, the
`normalized_effect` metric here (`ld_shift`: the score itself). Means over pairs with 95% t intervals.

EAP is exact where LD is linear in the receiver's input. For the embeddings, whose edges reach
every receiver, the scores summed over edges converge under EAP-IG to the whole effect of the
counterfactual embeddings (LD_cf - LD_clean) as K grows; for other senders they are estimates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bindexp.interventions.engine.graph import Graph
from bindexp.interventions.engine.graph_forward import GraphParts, GraphRun, PrefixState, graph_forward
from bindexp.interventions.engine.graph_runs import PairRuns, pair_runs, token_embeds
from bindexp.interventions.engine.plan import GridPlan, TokenizedPair
from bindexp.interventions.results.grid import Grid, GridAccumulator
from bindexp.interventions.results.metrics import logit_diff

EDGE_METRICS = ("normalized_effect", "ld_shift")
IG_ROWS = 4  # interpolation points per forward + backward


def ig_alphas(steps: int) -> list[float]:
    """The interpolation points of EAP-IG (midpoints of K equal steps)."""
    return [(k + 0.5) / steps for k in range(steps)]


def receiver_gradients(parts: GraphParts, item: TokenizedPair, prefix: PrefixState | None,
                       ig_steps: int = 0) -> tuple[PairRuns, torch.Tensor]:
    """The pair's graph runs and dLD/d(each receiver's input), [receivers, T', d]: at the clean run
    (ig_steps 0), or averaged over the EAP-IG interpolation points."""
    start = prefix.length if prefix is not None else 0
    clean_embeds = token_embeds(parts, item.ids, start)
    if not ig_steps:
        with torch.enable_grad():
            clean = graph_forward(parts, clean_embeds, prefix=prefix, taps=True)
            logit_diff(clean.logits[0].float(), item.answer).backward()
        grads = clean.tap_gradients(parts.graph)[:, 0]
        with torch.no_grad():
            cf = graph_forward(parts, token_embeds(parts, item.cf_ids, start), prefix=prefix)
        detached = GraphRun(clean.outputs.detach(), [p.detach() for p in clean.points], clean.logits.detach())
        return PairRuns(item, start, detached, cf), grads
    runs = pair_runs(parts, item, prefix)
    cf_embeds = token_embeds(parts, item.cf_ids, start)
    total = None
    alphas = ig_alphas(ig_steps)
    for at in range(0, len(alphas), IG_ROWS):
        chunk = torch.tensor(alphas[at : at + IG_ROWS], dtype=clean_embeds.dtype, device=clean_embeds.device)
        embeds = clean_embeds + chunk[:, None, None] * (cf_embeds - clean_embeds)
        with torch.enable_grad():
            run = graph_forward(parts, embeds.detach(), prefix=prefix, taps=True)
            logit_diff(run.logits.float(), item.answer).sum().backward()
        grads = run.tap_gradients(parts.graph).sum(dim=1)
        total = grads if total is None else total + grads
    return runs, total / ig_steps


def pair_edge_scores(graph: Graph, runs: PairRuns, grads: torch.Tensor, edges: Sequence[tuple[int, int]]) -> np.ndarray:
    """Each edge's score for one pair: sum over positions of delta_sender . grad_receiver."""
    senders = sorted({s for s, _ in edges})
    receivers = sorted({r for _, r in edges})
    scores = torch.einsum("std,rtd->sr", runs.delta[senders].float(), grads[receivers].float())
    row, column = {s: i for i, s in enumerate(senders)}, {r: j for j, r in enumerate(receivers)}
    rows, columns = torch.tensor([row[s] for s, _ in edges]), torch.tensor([column[r] for _, r in edges])
    return scores[rows, columns].double().cpu().numpy()


def edge_attribution(plan: GridPlan, *, ig_steps: int = 0, edges: Sequence[tuple[int, int]] | None = None,
                     min_gap: float = 0.0, progress: bool = False) -> Grid:
    """EAP (ig_steps 0) or EAP-IG scores of `edges` (default: every edge), as a grid over the axis
    "edge" (labels `sender->receiver`), metrics `normalized_effect` and `ld_shift`."""
    from tqdm.auto import tqdm

    parts = GraphParts.of(plan.lm)
    graph = parts.graph
    edges = list(graph.edges if edges is None else edges)
    prefix = PrefixState.of(plan.prefix, graph.n_layers)
    accumulator = GridAccumulator(("edge",), {"edge": [graph.edge_name(e) for e in edges]}, EDGE_METRICS)
    excluded = []
    for index, item in enumerate(tqdm(plan.tokenized, disable=not progress, desc="EAP-IG" if ig_steps else "EAP",
                                      unit="pair")):
        runs, grads = receiver_gradients(parts, item, prefix, ig_steps)
        gap = runs.ld_cf - runs.ld_clean
        if abs(gap) < max(min_gap, 1e-6):
            excluded.append(index)
            continue
        scores = pair_edge_scores(graph, runs, grads, edges)
        accumulator.add({"normalized_effect": scores / gap, "ld_shift": scores})
    return accumulator.grid(info={"method": "eap_ig" if ig_steps else "eap", "ig_steps": ig_steps,
                                  "pairs": len(plan.tokenized), "dropped": plan.dropped,
                                  "excluded_small_gap": len(excluded), "excluded_pairs": excluded, "min_gap": min_gap})
