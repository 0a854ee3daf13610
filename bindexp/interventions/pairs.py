"""Pairs made ready for patching: tokens, role positions, answer tokens, and the clean and
counterfactual runs whose activations every cell reuses (computed once per pair).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from bindexp.interventions.metrics import AnswerTokens, logit_diff
from bindexp.models.forward import SharedPrefix, common_prefix_length, encode
from bindexp.models.loading import LoadedModel, ModelError
from bindexp.models.positions import role_positions
from bindexp.models.scoring import candidate_token_ids
from bindexp.models.sites import SiteMap
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.program import Program
from bindexp.tasks.prompts import build_prompt, program_offset

DIGITS = tuple(str(d) for d in range(10))


@dataclasses.dataclass
class TokenizedPair:
    pair: CounterfactualPair
    ids: list[int]
    cf_ids: list[int]
    roles: dict[str, int]  # role -> token position (same in both prompts)
    program_start: int  # token position where the program begins (after the few-shot examples)
    answer: AnswerTokens
    tokens: list[str]  # token texts of the clean prompt

    @property
    def first_diff(self) -> int:
        return next(i for i, (a, b) in enumerate(zip(self.ids, self.cf_ids)) if a != b)


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


def pair_prompts(pair: CounterfactualPair, shots: Sequence[Program], template: str) -> tuple[str, str]:
    return build_prompt(pair.original, shots, template), build_prompt(pair.counterfactual, shots, template)


def tokenize_pairs(
    lm: LoadedModel, pairs: Sequence[CounterfactualPair], shots: Sequence[Program] = (), template: str = "raw",
    candidates: Sequence[str] = DIGITS,
) -> tuple[list[TokenizedPair], list[str]]:
    """Tokenize both sides of each pair; pairs whose sides do not align token by token are
    dropped, with the reason returned alongside."""
    tokenized, dropped = [], []
    candidate_ids: list[int] | None = None
    for pair in pairs:
        prompt, cf_prompt = pair_prompts(pair, shots, template)
        clean, cf = encode(lm.tokenizer, [prompt, cf_prompt])
        if len(clean.ids) != len(cf.ids) or clean.offsets != cf.offsets:
            dropped.append(f"tokens of the two sides do not align: {pair.original.text!r}")
            continue
        if candidate_ids is None:
            candidate_ids = candidate_token_ids(lm.tokenizer, prompt, candidates)
        start = program_offset(prompt, pair.original)
        roles = role_positions(pair.original, clean.offsets, start)
        answer = AnswerTokens(
            original=candidate_ids[list(candidates).index(str(pair.original.answer))],
            counterfactual=candidate_ids[list(candidates).index(str(pair.counterfactual.answer))],
            candidates=tuple(candidate_ids),
        )
        program_token = next(i for i, (a, b) in enumerate(clean.offsets) if b > start)
        tokens = [prompt[a:b] for a, b in clean.offsets]
        tokenized.append(TokenizedPair(pair, clean.ids, cf.ids, roles, program_token, answer, tokens))
    return tokenized, dropped


def shared_prefix_length(tokenized: Sequence[TokenizedPair]) -> int:
    """Tokens every prompt of the chunk shares, stopping before the first counterfactual edit."""
    if not tokenized:
        return 0
    common = common_prefix_length([t.ids for t in tokenized] + [t.cf_ids for t in tokenized])
    return min([common] + [t.first_diff for t in tokenized])


def site_value(sites: SiteMap, root, site: str, layer: int):
    """Inside a trace: the site's activation at `layer` (the module's input or output)."""
    module = sites.module(root, site, layer)
    value = module.input if sites.reads_input(site) else module.output
    return value[0] if isinstance(value, tuple) else value


def prepare_pairs(lm: LoadedModel, site: str, tokenized: Sequence[TokenizedPair],
                  prefix: SharedPrefix | None = None) -> list[PreparedPair]:
    """Run each pair's clean and counterfactual prompts once (as one batch of two), keeping what
    the patched runs need. `prefix` is the shared few-shot prefix's cache, computed once."""
    sites = SiteMap.of(lm.model, lm.family)
    traced = lm.traced
    start = prefix.length if prefix else 0
    prepared = []
    for item in tokenized:
        if item.first_diff < start:
            raise ModelError("the shared prefix must end before the counterfactual edit")
        ids = torch.tensor([item.ids[start:], item.cf_ids[start:]], device=lm.device)
        positions = torch.arange(start, len(item.ids), device=lm.device).expand(2, -1)
        resid, site_acts = [], []
        with torch.no_grad():
            with traced.trace(ids, position_ids=positions, past_key_values=prefix.cache_for(2) if prefix else None,
                              use_cache=True, logits_to_keep=1):
                for layer in range(sites.n_layers):
                    resid.append(sites.layer(traced, layer).input.save())
                    if site != "resid_pre":
                        site_acts.append(site_value(sites, traced, site, layer).save())
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
