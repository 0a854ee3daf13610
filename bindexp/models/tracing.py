"""Tracing after a shared prefix, and reading or writing an intervention site inside a trace.

Every method that runs prompts sharing a few-shot prefix runs only the tokens after it, with
position ids that continue the prefix and the prefix's key/value cache (computed once):

    ids, positions, cache = after_prefix([clean_ids, cf_ids], prefix, lm.device)
    with lm.traced.trace(ids, position_ids=positions, past_key_values=cache, ...):
        value = site_activation(lm.sites, lm.traced, "resid_pre", layer)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from bindexp.models.forward import SharedPrefix
from bindexp.models.sites import SiteMap


def after_prefix(rows: Sequence[Sequence[int]], prefix: SharedPrefix | None,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, DynamicCache | None]:
    """Token ids after the prefix [rows, T - start], their position ids, and the prefix's cache
    for that many rows (None without a prefix). Every row has the same length."""
    start = prefix.length if prefix else 0
    ids = torch.tensor([list(row[start:]) for row in rows], device=device)
    positions = torch.arange(start, start + ids.shape[1], device=device).expand(len(rows), -1)
    return ids, positions, prefix.cache_for(len(rows)) if prefix else None


def site_activation(sites: SiteMap, root: Any, site: str, layer: int) -> Any:
    """Inside a trace: the site's activation at `layer` (the module's input or output, the first
    element when it is a tuple), to save or to assign into."""
    module = sites.module(root, site, layer)
    value = module.input if sites.reads_input(site) else module.output
    return value[0] if isinstance(value, tuple) else value
