"""Pairs made ready for patching: the clean and counterfactual runs whose activations every cell
reuses (computed once per pair, after the shared prefix).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from bindexp.errors import ModelError
from bindexp.interventions.engine.plan import TokenizedPair
from bindexp.interventions.results.metrics import logit_diff
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel
from bindexp.models.tracing import after_prefix, site_activation


@dataclasses.dataclass
class PreparedPair:
    """A tokenized pair plus its clean and counterfactual runs (positions >= `start` only)."""

    tokens: TokenizedPair
    start: int  # first position held below (the shared prefix length)
    clean_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, [1, kv_heads, T, head_dim]
    clean_resid: torch.Tensor  # [layers, T - start, d]: resid_pre of every layer
    clean_site: torch.Tensor  # [layers, T - start, width]: the site's activation, clean run
    cf_site: torch.Tensor  # [layers, T - start, width]: the site's activation, counterfactual run
    clean_logits: torch.Tensor  # [vocab] at the final position
    cf_logits: torch.Tensor

    @property
    def ld_clean(self) -> float:
        return float(logit_diff(self.clean_logits.float(), self.tokens.answer))

    @property
    def ld_cf(self) -> float:
        return float(logit_diff(self.cf_logits.float(), self.tokens.answer))

    def site_values(self, source: str) -> torch.Tensor:
        return {"counterfactual": self.cf_site, "clean": self.clean_site}[source]


def prepare_pairs(lm: LoadedModel, site: str, tokenized: Sequence[TokenizedPair],
                  prefix: SharedPrefix | None = None) -> list[PreparedPair]:
    """Run each pair's clean and counterfactual prompts once (as one batch of two), keeping what
    the patched runs need. `prefix` is the shared few-shot prefix's cache, computed once."""
    sites = lm.sites
    traced = lm.traced
    start = prefix.length if prefix else 0
    prepared = []
    for item in tokenized:
        if item.first_diff < start:
            raise ModelError("the shared prefix must end before the counterfactual edit")
        ids, positions, cache = after_prefix([item.ids, item.cf_ids], prefix, lm.device)
        resid, site_acts = [], []
        with torch.no_grad():
            with traced.trace(ids, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1):
                for layer in range(sites.n_layers):
                    resid.append(sites.layer(traced, layer).input.save())
                    if site != "resid_pre":
                        site_acts.append(site_activation(sites, traced, site, layer).save())
                output = traced.output.save()
        if site == "resid_pre":
            site_acts = resid
        resid_t = torch.stack([r[0] for r in resid])
        site_t = torch.stack([s for s in site_acts])  # [layers, 2, T - start, width]
        kv = [(keys[:1].clone(), values[:1].clone()) for keys, values, *_ in output.past_key_values]  # drop the cf row
        prepared.append(PreparedPair(
            tokens=item, start=start, clean_kv=kv, clean_resid=resid_t,
            clean_site=site_t[:, 0].clone(), cf_site=site_t[:, 1].clone(),
            clean_logits=output.logits[0, -1].float(), cf_logits=output.logits[1, -1].float(),
        ))
    return prepared
