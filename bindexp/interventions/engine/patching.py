"""Exact activation patching through nnsight, with no work done twice.

A cell writes the counterfactual run's activation at (layer l, positions P[, head h]) into the
clean run and reads the final logits. What each patched forward really computes:
- positions before s = min(P) are untouched at every layer: their keys and values come from the
  clean run's cache, cropped to s; only tokens s..T-1 run;
- layers before l are untouched: they are skipped (nnsight `skip`) and layer l starts from the
  clean residual stream;
- many cells share one forward: rows of a batch may come from different pairs (right-padded, so
  programs of different token lengths mix) and write at different positions and heads.
The clean and counterfactual activations come from `prepare_pairs`, once per pair.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch

from bindexp.errors import ModelError
from bindexp.interventions.engine.prepared import PreparedPair
from bindexp.models.forward import new_cache
from bindexp.models.loading import LoadedModel
from bindexp.models.sites import SiteMap
from bindexp.models.tracing import site_activation

# what a cell writes: a pair's values of the site, [layers, T - start, width] (e.g. the counterfactual
# run's), by name or as a function of the pair; or each cell's own values (a sequence, one tensor per
# cell: [len(positions), features written], e.g. path patching's receiver values)
Source = str | Callable[[PreparedPair], torch.Tensor] | Sequence[torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One intervention: which pair, layer, token positions and (for per-head sites) which head, or
    heads (a tuple: their features written together)."""

    pair: int
    layer: int
    positions: tuple[int, ...]
    head: int | tuple[int, ...] | None = None


def forward_batches(cells: Sequence[Cell], size: int) -> list[list[int]]:
    """Cell indices grouped by layer, then by first position, `size` at most per forward."""
    by_layer: dict[int, list[int]] = defaultdict(list)
    for index, cell in enumerate(cells):
        by_layer[cell.layer].append(index)
    batches = []
    for layer in sorted(by_layer):
        ordered = sorted(by_layer[layer], key=lambda i: (min(cells[i].positions), cells[i].pair))
        batches += [ordered[at : at + size] for at in range(0, len(ordered), size)]
    return batches


def _stack_cache(prepared: Sequence[PreparedPair], rows: list[int], s: int, layer: int, config):
    """Rows' clean keys/values for positions < s. Layers below `layer` are skipped, so they get
    a view of the first row (only its length is read)."""
    first = prepared[rows[0]]
    data = []
    for j, (keys, values) in enumerate(first.clean_kv):
        if j < layer:
            data.append((keys[:, :, :s].expand(len(rows), -1, -1, -1), values[:, :, :s].expand(len(rows), -1, -1, -1)))
        else:
            data.append((torch.cat([prepared[r].clean_kv[j][0][:, :, :s] for r in rows]),
                         torch.cat([prepared[r].clean_kv[j][1][:, :, :s] for r in rows])))
    return new_cache(data, config)


def patched_logits(
    lm: LoadedModel,
    site: str,
    prepared: Sequence[PreparedPair],
    cells: Sequence[Cell],
    *,
    source: Source = "counterfactual",
    cells_per_forward: int = 32,
    on_forward: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Final-position logits of the clean run with each cell patched: [len(cells), vocab].

    source="clean" writes the clean run's own values (a patch that must change nothing); a
    function of the prepared pair gives any other values (e.g. zeros); a sequence gives each cell's
    own values. on_forward(n): called after each forward with the number of cells it ran.
    """
    sites = lm.sites
    traced, device = lm.traced, lm.device
    out: torch.Tensor | None = None
    for batch in forward_batches(cells, cells_per_forward):
        chosen = [cells[i] for i in batch]
        layer = chosen[0].layer
        rows = [c.pair for c in chosen]
        s = min(min(c.positions) for c in chosen)
        if any(s < prepared[r].start for r in rows):
            raise ModelError("a cell lies in the shared prefix, where both runs are identical")
        lengths = [len(prepared[r].tokens.ids) - s for r in rows]
        width = max(lengths)
        ids = torch.full((len(rows), width), 0, dtype=torch.long)
        for row, r in enumerate(rows):
            ids[row, : lengths[row]] = torch.tensor(prepared[r].tokens.ids[s:])
        ids = ids.to(device)
        positions = torch.arange(s, s + width, device=device).expand(len(rows), -1)
        last = torch.tensor(lengths, device=device)[:, None] - 1
        cache = _stack_cache(prepared, rows, s, layer, lm.model.config)

        resid = None
        if layer > 0:  # the clean residual entering `layer`, positions s.., for the skipped layers
            resid = torch.zeros(len(rows), width, prepared[rows[0]].clean_resid.shape[-1],
                                dtype=prepared[rows[0]].clean_resid.dtype, device=device)
            for row, r in enumerate(rows):
                at = s - prepared[r].start
                resid[row, : lengths[row]] = prepared[r].clean_resid[layer, at : at + lengths[row]]
        writes = _writes(sites, prepared, [(i, cells[i]) for i in batch], s, source)

        with torch.no_grad():
            with traced.trace(ids, position_ids=positions, past_key_values=cache, use_cache=True,
                              logits_to_keep=last):
                for j in range(layer):
                    sites.layer(traced, j).skip(resid)
                target = site_activation(sites, traced, site, layer)
                for row_index, col_index, columns, values in writes:
                    if columns is None:
                        target[row_index, col_index] = values
                    else:
                        target[row_index, col_index, columns] = values
                logits = traced.output.logits.save()
        logits = logits[:, 0].float().cpu()
        if out is None:
            out = torch.empty(len(cells), logits.shape[-1])
        out[batch] = logits
        if on_forward is not None:
            on_forward(len(batch))
    return out if out is not None else torch.empty(0, 0)


def _cell_values(sites: SiteMap, prepared: Sequence[PreparedPair], index: int, cell: Cell,
                 source: Source) -> torch.Tensor:
    """What cell `index` writes: [len(positions), its features]."""
    if not isinstance(source, str) and not callable(source):
        return source[index]
    pair = prepared[cell.pair]
    values = (source(pair) if callable(source) else pair.site_values(source))[cell.layer]
    values = values[[p - pair.start for p in cell.positions]]
    return values if cell.head is None else values[:, sites.head_columns(cell.head)]


def _writes(sites: SiteMap, prepared: Sequence[PreparedPair], chosen: Sequence[tuple[int, Cell]], s: int,
            source: Source):
    """Group a batch's writes by head so each is one indexed assignment."""
    groups: dict[int | tuple | None, list[tuple[int, int, torch.Tensor]]] = defaultdict(list)
    for row, (index, cell) in enumerate(chosen):
        values = _cell_values(sites, prepared, index, cell, source)
        for p, value in zip(cell.positions, values):
            groups[cell.head].append((row, p - s, value))
    writes = []
    for head, items in groups.items():
        device = items[0][2].device
        rows = torch.tensor([i[0] for i in items], device=device)
        cols = torch.tensor([i[1] for i in items], device=device)
        columns = None if head is None else torch.tensor(sites.head_columns(head), device=device)
        values = torch.stack([i[2] for i in items])
        if columns is not None:
            rows, cols = rows[:, None], cols[:, None]
        writes.append((rows, cols, columns, values))
    return writes
