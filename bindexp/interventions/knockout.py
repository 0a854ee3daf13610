"""Attention knockout: stop a destination token from attending to source tokens in chosen
layers, and measure what the answer loses.

The block is a -inf entry in the attention mask handed to the chosen layers' attention (through
nnsight), so the source's information cannot reach the destination along that edge; every other
edge and layer is untouched. Needs eager or sdpa attention (flash attention takes no mask).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bindexp.interventions.grid import Grid, GridAccumulator
from bindexp.interventions.methods import MethodOptions, MethodResult
from bindexp.interventions.plan import GridPlan, TokenizedPair, plan_grid
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel, ModelError
from bindexp.models.tracing import after_prefix
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.program import Program

KNOCKOUT_METRICS = ("p_drop", "logit_drop", "accuracy")
Block = dict[int, list[tuple[int, int]]]  # layer -> [(destination, source)] token positions


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
        allowed = causal.expand(rows, 1, -1, -1).clone()
        for row, block in enumerate(blocks):
            for destination, source in block.get(layer, []):
                if not start <= destination < total or not 0 <= source <= destination:
                    raise ModelError(f"cannot block {destination} -> {source}")
                allowed[row, 0, destination - start, source] = False
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
        clean = knockout_logits(lm, item, [{}], plan.prefix)[0]
        batches = [knockout_logits(lm, item, blocks[at : at + options.cells_per_forward], plan.prefix)
                   for at in range(0, len(blocks), options.cells_per_forward)]
        values = {m: np.full(accumulator.pairs.shape, np.nan) for m in KNOCKOUT_METRICS}
        answer = item.answer
        p_clean = torch.softmax(clean, -1)[answer.original]
        candidates = torch.tensor(answer.candidates)
        for (li, si), row in zip(cells, torch.cat(batches) if batches else []):
            values["p_drop"][li, si] = float(p_clean - torch.softmax(row, -1)[answer.original])
            values["logit_drop"][li, si] = float(clean[answer.original] - row[answer.original])
            values["accuracy"][li, si] = float(candidates[row[candidates].argmax()] == answer.original)
        accumulator.add(values)
    return MethodResult(accumulator.grid(info={"method": "knockout", "destination": destination, "window": window,
                                               "pairs": len(plan.tokenized), "dropped": plan.dropped}))
