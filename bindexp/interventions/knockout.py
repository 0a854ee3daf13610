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
from bindexp.interventions.pairs import TokenizedPair, shared_prefix_length, tokenize_pairs
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel, ModelError
from bindexp.models.sites import SiteMap
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
    sites = SiteMap.of(lm.model, lm.family)
    start = prefix.length if prefix else 0
    rows, total = len(blocks), len(item.ids)
    window = getattr(lm.model.config.get_text_config(), "sliding_window", None)
    if window and total > window:
        raise ModelError(f"knockout replaces the attention mask, which would drop this model's sliding window "
                         f"({window} tokens) on a {total}-token prompt; use shorter prompts")
    ids = torch.tensor([item.ids[start:]], device=lm.device).expand(rows, -1)
    positions = torch.arange(start, total, device=lm.device).expand(rows, -1)
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
        with lm.traced.trace(ids, position_ids=positions, past_key_values=prefix.cache_for(rows) if prefix else None,
                             use_cache=prefix is not None, logits_to_keep=1):
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
    sources: Sequence[str],
    destination: str = "final",
    window: int = 1,
    layers: Sequence[int] | None = None,
    shots: Sequence[Program] = (),
    template: str = "raw",
    cells_per_forward: int = 32,
    progress: bool = False,
) -> Grid:
    """For each window of `window` layers (labelled by its first layer; `layers` limits the first
    layers) and each source role, block destination -> source and record the drop in the answer."""
    from tqdm.auto import tqdm

    sites = SiteMap.of(lm.model, lm.family)
    tokenized, dropped = tokenize_pairs(lm, pairs, shots, template)
    if not tokenized:
        raise ModelError("no program is left to knock out" + (f" ({dropped[0]})" if dropped else ""))
    starts = [layer for layer in range(0, sites.n_layers - window + 1) if layers is None or layer in layers]
    if not starts:
        raise ModelError(f"no window of {window} layers starts at {list(layers or [])} in {sites.n_layers} layers")
    accumulator = GridAccumulator(("layer", "role"), {"layer": starts, "role": list(sources)}, KNOCKOUT_METRICS)
    start = shared_prefix_length(tokenized)
    prefix = SharedPrefix(lm.model, tokenized[0].ids[:start]) if start else None
    for item in tqdm(tokenized, disable=not progress, desc="knockout", unit="program"):
        if destination not in item.roles:
            raise ModelError(f"unknown destination role {destination!r}")
        dest = item.roles[destination]
        cells = [(li, si) for li in range(len(starts)) for si, role in enumerate(sources)
                 if role in item.roles and item.roles[role] <= dest]
        blocks = [{starts[li] + k: [(dest, item.roles[sources[si]])] for k in range(window)} for li, si in cells]
        clean = knockout_logits(lm, item, [{}], prefix)[0]
        batches = [knockout_logits(lm, item, blocks[at : at + cells_per_forward], prefix)
                   for at in range(0, len(blocks), cells_per_forward)]
        values = {m: np.full(accumulator.pairs.shape, np.nan) for m in KNOCKOUT_METRICS}
        answer = item.answer
        p_clean = torch.softmax(clean, -1)[answer.original]
        candidates = torch.tensor(answer.candidates)
        for (li, si), row in zip(cells, torch.cat(batches) if batches else []):
            values["p_drop"][li, si] = float(p_clean - torch.softmax(row, -1)[answer.original])
            values["logit_drop"][li, si] = float(clean[answer.original] - row[answer.original])
            values["accuracy"][li, si] = float(candidates[row[candidates].argmax()] == answer.original)
        accumulator.add(values)
    return accumulator.grid(info={"method": "knockout", "destination": destination, "window": window,
                                  "pairs": len(tokenized), "dropped": dropped})
