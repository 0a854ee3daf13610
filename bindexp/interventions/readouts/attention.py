"""Attention patterns: for every layer x head, the weights from chosen destination tokens (the
final token, the query variable) to every source token, and their means per role over programs.

    weights = attention_weights(lm, ids, destinations=[roles["query_var"], roles["final"]])
    grids = role_attention(lm, sequences, roles, destinations=["final", "query_var"])
    grids["final"].mean["attention"][layer, role, head]
    routing_heads(grids["final"], "root_value", k=5)

The weights are read through nnsight from each attention module's returned weights, which only
the eager implementation forms (sdpa and flash attention never materialise them). A model loaded
with another implementation is switched to eager for these forwards and switched back afterwards
(`eager_attention`); the implementations agree to float rounding. Grouped-query models need no
special care: eager attention repeats each key/value head for its query heads, so weights come
per *query* head ([layer, head, ...] with head < num_attention_heads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from bindexp.errors import ModelError
from bindexp.interventions.results.grid import Grid, GridAccumulator
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel
from bindexp.models.tracing import after_prefix

ATTENTION_METRIC = "attention"


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Run the block with the model's attention set to eager; restore the loaded implementation."""
    before = getattr(model.config, "_attn_implementation", None)
    if before == "eager":
        yield
        return
    try:
        model.set_attn_implementation("eager")
    except (ValueError, ImportError, AttributeError) as err:
        raise ModelError(f"attention weights need eager attention, and this model's {before!r} attention "
                         f"cannot be switched to eager: {str(err).strip().splitlines()[0]}") from None
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def attention_weights(lm: LoadedModel, ids: Sequence[int], destinations: Sequence[int], *,
                      prefix: SharedPrefix | None = None) -> torch.Tensor:
    """Attention weights of one prompt: [layer, head, destination, source], float32 on the CPU.

    ids: the whole prompt's token ids (prefix included). destinations: token positions whose
    attention rows are kept. Sources are every position 0..len(ids)-1; weights to sources after
    a destination are 0 (causal). prefix: the shared few-shot prefix's cache; its tokens are not
    run again, and destinations must lie after it.
    """
    sites = lm.sites
    start = prefix.length if prefix else 0
    if len(ids) <= start:
        raise ModelError("the prompt must extend past the shared prefix")
    rows = [d - start for d in destinations]
    if any(not 0 <= r < len(ids) - start for r in rows):
        raise ModelError(f"destinations must lie in {start}..{len(ids) - 1}, got {list(destinations)}")
    tensor, positions, cache = after_prefix([ids], prefix, lm.device)
    saved = []
    with eager_attention(lm.model), torch.no_grad():
        with lm.traced.trace(tensor, position_ids=positions, past_key_values=cache,
                             use_cache=prefix is not None, logits_to_keep=1):
            for layer in range(sites.n_layers):
                weights = sites.module(lm.traced, "attn_out", layer).output[1]
                saved.append(weights[0][:, rows, :].save())
    if any(w is None for w in saved):
        raise ModelError("the attention modules returned no weights even in eager mode")
    return torch.stack([w.float().cpu() for w in saved])


def role_attention(lm: LoadedModel, sequences: Sequence[Sequence[int]], roles: Sequence[dict[str, int]],
                   destinations: Sequence[str], sources: Sequence[str] | None = None, *,
                   prefix: SharedPrefix | None = None, progress: bool = False) -> dict[str, Grid]:
    """Mean attention weight (95% mean interval over programs) from each destination role to each
    source role, per layer and head: one Grid per destination, axes ("layer", "role", "head"),
    metric "attention".

    sequences[i] and roles[i] (role -> token position) describe program i. sources default to the
    roles of the first program, in its order. A cell is NaN for a program that lacks either role
    or whose source comes after its destination (no such edge under causal attention); `n`
    counts the programs behind each cell.
    """
    from tqdm.auto import tqdm

    if len(sequences) != len(roles) or not sequences:
        raise ModelError("role_attention needs one roles dict per sequence, and at least one sequence")
    sources = list(roles[0]) if sources is None else list(sources)
    sites = lm.sites
    labels = {"layer": list(range(sites.n_layers)), "role": sources, "head": list(range(sites.n_heads))}
    accumulators = {d: GridAccumulator(("layer", "role", "head"), labels, [ATTENTION_METRIC]) for d in destinations}
    for ids, program_roles in tqdm(list(zip(sequences, roles)), disable=not progress, desc="attention", unit="program"):
        present = [d for d in destinations if d in program_roles]
        weights = attention_weights(lm, ids, [program_roles[d] for d in present], prefix=prefix).numpy() if present \
            else None
        for destination, accumulator in accumulators.items():
            values = np.full(accumulator.pairs.shape, np.nan)
            if destination in present:
                row = weights[:, :, present.index(destination), :]  # [layer, head, source]
                dest = program_roles[destination]
                for column, source in enumerate(sources):
                    if source in program_roles and program_roles[source] <= dest:
                        values[:, column, :] = row[:, :, program_roles[source]]
            accumulator.add({ATTENTION_METRIC: values})
    return {d: a.grid(info={"method": "attention", "destination": d, "programs": len(sequences)})
            for d, a in accumulators.items()}


def routing_heads(grid: Grid, source: str, k: int = 5):
    """The k (layer, head) pairs attending most from the grid's destination to `source`, as a
    DataFrame: layer, head, attention, ci_low, ci_high, n (most attention first)."""
    import pandas as pd

    column = grid.labels["role"].index(source)
    mean = grid.mean[ATTENTION_METRIC][:, column, :]
    order = np.argsort(-np.nan_to_num(mean, nan=-1.0), axis=None, kind="stable")[:k]
    rows = []
    for flat in order:
        layer, head = np.unravel_index(flat, mean.shape)
        rows.append({"layer": grid.labels["layer"][layer], "head": grid.labels["head"][head],
                     "attention": float(mean[layer, head]),
                     "ci_low": float(grid.ci_low[ATTENTION_METRIC][layer, column, head]),
                     "ci_high": float(grid.ci_high[ATTENTION_METRIC][layer, column, head]),
                     "n": int(grid.counts[ATTENTION_METRIC][layer, column, head])})
    return pd.DataFrame(rows)
