"""Attention knockout: stop a destination token from attending to source tokens in chosen
layers, and measure what the answer loses.

The block is a -inf entry in the attention mask handed to the chosen layers' attention (through
nnsight), so the source's information cannot reach the destination along that edge; every other
edge and layer is untouched. An edge may name one head, `(destination, source, head)`: the mask
then has a row per query head and only that head loses the edge (grouped-query models included:
the mask is per query head whichever way the attention shares key/value heads). Needs eager or
sdpa attention (flash attention takes no mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bindexp.errors import ModelError
from bindexp.interventions.engine.plan import GridPlan, TokenizedPair, plan_grid
from bindexp.interventions.methods import MethodOptions, MethodResult
from bindexp.interventions.results.grid import Grid, GridAccumulator
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel
from bindexp.models.tracing import after_prefix
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.program import Program

# p_drop: the answer's probability lost; ld_drop: the drop in LD = answer logit minus the best competing
# candidate's logit (what decides the answer); logit_drop: the answer's raw logit drop; accuracy: what is left
KNOCKOUT_METRICS = ("p_drop", "ld_drop", "logit_drop", "accuracy")
# layer -> [(destination, source)] or [(destination, source, head)] token positions (and query head)
Block = dict[int, list[tuple[int, ...]]]


def knockout_logits(lm: LoadedModel, item: TokenizedPair, blocks: Sequence[Block],
                    prefix: SharedPrefix | None = None) -> torch.Tensor:
    """Final logits of the clean prompt once per entry of `blocks` (one batch): [len(blocks), vocab]."""
    implementation = getattr(lm.model.config, "_attn_implementation", "sdpa")
    if implementation not in ("eager", "sdpa"):
        raise ModelError(f"attention knockout needs eager or sdpa attention, not {implementation!r}")
    sites = lm.sites
    start = prefix.length if prefix else 0
    rows, total = len(blocks), len(item.ids)
    window = getattr(lm.model.config.get_text_config(), "sliding_window", None)
    if window and total > window:
        raise ModelError(f"knockout replaces the attention mask, which would drop this model's sliding window "
                         f"({window} tokens) on a {total}-token prompt; use shorter prompts")
    ids, positions, cache = after_prefix([item.ids] * rows, prefix, lm.device)
    queries = torch.arange(start, total, device=lm.device)[:, None]
    causal = torch.arange(total, device=lm.device)[None, :] <= queries  # [T - start, T]
    minimum = torch.finfo(lm.dtype).min
    masks: dict[int, torch.Tensor] = {}
    for layer in sorted({layer for block in blocks for layer in block}):
        per_head = any(len(edge) == 3 for block in blocks for edge in block.get(layer, []))
        allowed = causal.expand(rows, sites.n_heads if per_head else 1, -1, -1).clone()
        for row, block in enumerate(blocks):
            for destination, source, *head in block.get(layer, []):
                if not start <= destination < total or not 0 <= source <= destination:
                    raise ModelError(f"cannot block {destination} -> {source}")
                if head and not 0 <= head[0] < sites.n_heads:
                    raise ModelError(f"no head {head[0]} in a layer of {sites.n_heads} heads")
                allowed[row, head[0] if head else slice(None), destination - start, source] = False
        masks[layer] = torch.zeros(allowed.shape, dtype=lm.dtype, device=lm.device).masked_fill(~allowed, minimum)
    with torch.no_grad():
        with lm.traced.trace(ids, position_ids=positions, past_key_values=cache, use_cache=prefix is not None,
                             logits_to_keep=1):
            for layer in range(sites.n_layers):
                if layer in masks:
                    attention = sites.module(lm.traced, "attn_out", layer)
                    args, kwargs = attention.inputs
                    attention.inputs = (args, {**kwargs, "attention_mask": masks[layer]})
            logits = lm.traced.output.logits.save()
    return logits[:, -1].float().cpu()


def answer_margin(logits: torch.Tensor, answer: int, candidates: Sequence[int]) -> float:
    """LD of the answer against its competitors: its logit minus the largest logit among the other
    candidate answers (positive: the answer wins)."""
    others = torch.tensor([c for c in candidates if c != answer])
    return float(logits[answer] - logits[others].max())


def knockout_metrics(item: TokenizedPair, clean: torch.Tensor, knocked: torch.Tensor) -> dict[str, float]:
    """What the answer loses from clean to knocked-out final logits (`KNOCKOUT_METRICS`)."""
    answer, candidates = item.answer, torch.tensor(item.answer.candidates)
    p = lambda logits: torch.softmax(logits, -1)[answer.original]  # noqa: E731
    return {"p_drop": float(p(clean) - p(knocked)),
            "ld_drop": answer_margin(clean, answer.original, answer.candidates)
            - answer_margin(knocked, answer.original, answer.candidates),
            "logit_drop": float(clean[answer.original] - knocked[answer.original]),
            "accuracy": float(candidates[knocked[candidates].argmax()] == answer.original)}


def knockout_grid(
    lm: LoadedModel,
    pairs: Sequence[CounterfactualPair],
    *,
    sources: Sequence[str] | None = None,
    destination: str = "final",
    window: int = 1,
    layers: Sequence[int] | None = None,
    shots: Sequence[Program] = (),
    template: str = "raw",
    cells_per_forward: int = 32,
    progress: bool = False,
) -> Grid:
    """For each window of `window` layers (labelled by its first layer; `layers` limits the first
    layers) and each source role (None: every role column but the final token), block
    destination -> source and record the drop in the answer."""
    plan = plan_grid(lm, pairs, shots=shots, template=template, layers=layers)
    options = MethodOptions(cells_per_forward=cells_per_forward, progress=progress, knockout_destination=destination,
                            knockout_window=window, knockout_sources=sources)
    return knockout_method(plan, options).grid


def knockout_method(plan: GridPlan, options: MethodOptions) -> MethodResult:
    """Attention knockout over the plan's pairs: columns are the sources, layers the windows' first layers."""
    from tqdm.auto import tqdm

    lm, window, destination = plan.lm, options.knockout_window, options.knockout_destination
    n_layers = lm.sites.n_layers
    starts = [layer for layer in range(0, n_layers - window + 1) if layer in plan.layers]
    if not starts:
        raise ModelError(f"no window of {window} layers starts at {plan.layers} in {n_layers} layers")
    sources = list(options.knockout_sources or [c for c in plan.labels if c != "final"])
    accumulator = GridAccumulator(("layer", plan.axis), {"layer": starts, plan.axis: sources}, KNOCKOUT_METRICS)
    for item in tqdm(plan.tokenized, disable=not options.progress, desc="knockout", unit="program"):
        if destination not in item.roles:
            raise ModelError(f"unknown destination role {destination!r}")
        dest = item.roles[destination]
        where = item.roles if plan.axis == "role" else plan.column_map(item)
        cells = [(li, si) for li in range(len(starts)) for si, source in enumerate(sources)
                 if source in where and where[source] <= dest]
        blocks = [{starts[li] + k: [(dest, where[sources[si]])] for k in range(window)} for li, si in cells]
        values = {m: np.full(accumulator.pairs.shape, np.nan) for m in KNOCKOUT_METRICS}
        for cell, metrics in zip(cells, knockout_drops(plan, item, blocks, options.cells_per_forward)):
            for metric, value in metrics.items():
                values[metric][cell] = value
        accumulator.add(values)
    return MethodResult(accumulator.grid(info={"method": "knockout", "destination": destination, "window": window,
                                               "pairs": len(plan.tokenized), "dropped": plan.dropped}))


HeadEdge = tuple[int, int, str, str]  # layer, head, destination role, source role


def head_edge_knockout(plan: GridPlan, edges: Sequence[HeadEdge], cells_per_forward: int = 32) -> dict[str, np.ndarray]:
    """Block one head's attention from a destination role to a source role, edge by edge, on every
    pair's original prompt: per metric (`KNOCKOUT_METRICS`) an array [pairs, edges]; NaN where a
    role is missing, the source comes after the destination, or the destination lies in the shared
    prefix (its row is never recomputed)."""
    values = {m: np.full((len(plan.tokenized), len(edges)), np.nan) for m in KNOCKOUT_METRICS}
    start = plan.prefix.length if plan.prefix else 0
    for pi, item in enumerate(plan.tokenized):
        roles = item.roles
        usable = [ei for ei, (_, _, dest, source) in enumerate(edges)
                  if dest in roles and source in roles and start <= roles[dest] and roles[source] <= roles[dest]]
        blocks = [{edges[ei][0]: [(roles[edges[ei][2]], roles[edges[ei][3]], edges[ei][1])]} for ei in usable]
        for ei, metrics in zip(usable, knockout_drops(plan, item, blocks, cells_per_forward)):
            for metric, value in metrics.items():
                values[metric][pi, ei] = value
    return values


def knockout_drops(plan: GridPlan, item: TokenizedPair, blocks: Sequence[Block],
                   cells_per_forward: int) -> list[dict[str, float]]:
    """`knockout_metrics` of each block against the clean prompt, `cells_per_forward` blocks per
    forward (none run when there is no block)."""
    if not blocks:
        return []
    clean = knockout_logits(plan.lm, item, [{}], plan.prefix)[0]
    knocked = torch.cat([knockout_logits(plan.lm, item, blocks[at : at + cells_per_forward], plan.prefix)
                         for at in range(0, len(blocks), cells_per_forward)])
    return [knockout_metrics(item, clean, row) for row in knocked]
