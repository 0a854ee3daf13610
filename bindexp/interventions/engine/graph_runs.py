"""A pair's two graph forwards (clean and counterfactual), made once and reused by every
edge-level method: sender outputs and their deltas, the clean residual at each receiver stage, both
runs' logit differences.

    runs = pair_runs(parts, tokenized_pair, prefix_state)
    runs.delta[graph.node_index["8.1"]]     # head 8.1's output, counterfactual minus clean [T', d]
"""

from __future__ import annotations

import dataclasses

import torch

from bindexp.interventions.engine.graph_forward import GraphParts, GraphRun, PrefixState, graph_forward
from bindexp.interventions.engine.plan import TokenizedPair
from bindexp.interventions.results.metrics import logit_diff


@dataclasses.dataclass
class PairRuns:
    """One pair's clean and counterfactual graph forwards (positions after the shared prefix)."""

    tokens: TokenizedPair
    start: int  # the shared prefix length: position t here is token start + t
    clean: GraphRun
    cf: GraphRun

    @property
    def delta(self) -> torch.Tensor:
        """Each node's output, counterfactual minus clean: [nodes, T', d]."""
        return (self.cf.outputs - self.clean.outputs)[:, 0]

    @property
    def ld_clean(self) -> float:
        return float(logit_diff(self.clean.logits[0].float(), self.tokens.answer))

    @property
    def ld_cf(self) -> float:
        return float(logit_diff(self.cf.logits[0].float(), self.tokens.answer))

    def first_change(self) -> list[int | None]:
        """Per node: the first position (token index in the prompt) where its delta is not 0; None
        where it is 0 everywhere."""
        changed = self.delta.abs().amax(dim=-1) > 0  # [nodes, T']
        first = torch.where(changed.any(dim=1), changed.float().argmax(dim=1), -1).tolist()
        return [None if f < 0 else self.start + f for f in first]


def token_embeds(parts: GraphParts, ids: list[int], start: int) -> torch.Tensor:
    """Embeddings [1, T - start, d] of a prompt's tokens after the shared prefix."""
    return parts.embed(torch.tensor([ids[start:]], device=parts.lm.device))


def pair_runs(parts: GraphParts, item: TokenizedPair, prefix: PrefixState | None) -> PairRuns:
    """Both sides of a pair through the graph forward, without gradients."""
    start = prefix.length if prefix is not None else 0
    with torch.no_grad():
        clean = graph_forward(parts, token_embeds(parts, item.ids, start), prefix=prefix)
        cf = graph_forward(parts, token_embeds(parts, item.cf_ids, start), prefix=prefix)
    return PairRuns(item, start, clean, cf)
