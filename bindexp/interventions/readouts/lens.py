"""Logit lens: the residual stream at every layer decoded through the model's final norm and
unembedding, scored for the answer token and the counterfactual answer's token.

    values = logit_lens(lm, ids, positions, answer=a, counterfactual=c)   # arrays [layer, position]
    grid = role_lens(lm, sequences, roles, answers, columns=["root_value", "final"])

Layer axis: index l < n_layers is the residual entering layer l (resid_pre); index n_layers is the
residual leaving the last layer, where the lens equals the model's own logits. Ranks and
probabilities are over the full vocabulary: rank 1 is the top token, and rank = 1 + the number of
tokens with a strictly larger logit (ties favour the scored token).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bindexp.errors import ModelError
from bindexp.interventions.results.grid import Grid, GridAccumulator
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel
from bindexp.models.tracing import after_prefix

LENS_METRICS = ("p_answer", "rank_answer", "top1_answer", "p_counterfactual", "rank_counterfactual")
def decode_residual(lm: LoadedModel, residual: torch.Tensor) -> torch.Tensor:
    """Logits (float32) of residual vectors [..., d] through the final norm and the unembedding,
    with the model's final logit soft-capping where it has one (Gemma 2/3)."""
    with torch.no_grad():
        logits = lm.model.get_output_embeddings()(lm.sites.final_norm(lm.model)(residual.to(lm.device, lm.dtype))).float()
    cap = getattr(lm.model.config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def residual_stream(lm: LoadedModel, ids: Sequence[int], positions: Sequence[int], *,
                    prefix: SharedPrefix | None = None) -> torch.Tensor:
    """[n_layers + 1, position, d]: resid_pre of every layer, then the last layer's output."""
    sites = lm.sites
    start = prefix.length if prefix else 0
    columns = [p - start for p in positions]
    if any(not 0 <= c < len(ids) - start for c in columns):
        raise ModelError(f"positions must lie in {start}..{len(ids) - 1}, got {list(positions)}")
    tensor, position_ids, cache = after_prefix([ids], prefix, lm.device)
    saved = []
    with torch.no_grad():
        with lm.traced.trace(tensor, position_ids=position_ids, past_key_values=cache,
                             use_cache=prefix is not None, logits_to_keep=1):
            for layer in range(sites.n_layers):
                saved.append(sites.layer(lm.traced, layer).input[0][columns].save())
            output = sites.layer(lm.traced, sites.n_layers - 1).output
            output = output[0] if isinstance(output, tuple) else output
            saved.append(output[0][columns].save())
    return torch.stack(saved)


def token_rank_and_prob(logits: torch.Tensor, token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank (1 = top; 1 + tokens with a strictly larger logit) and softmax probability of `token`
    over the last (vocabulary) dimension of `logits`."""
    logits = logits.float()
    rank = (logits > logits[..., token : token + 1]).sum(-1) + 1
    return rank, torch.softmax(logits, dim=-1)[..., token]


def logit_lens(lm: LoadedModel, ids: Sequence[int], positions: Sequence[int], *, answer: int, counterfactual: int,
               prefix: SharedPrefix | None = None) -> dict[str, np.ndarray]:
    """Each of LENS_METRICS as an array [n_layers + 1, len(positions)] for one prompt; `answer`
    and `counterfactual` are token ids (the answer digit and the counterfactual's)."""
    logits = decode_residual(lm, residual_stream(lm, ids, positions, prefix=prefix))
    rank, p = token_rank_and_prob(logits, answer)
    cf_rank, cf_p = token_rank_and_prob(logits, counterfactual)
    values = {"p_answer": p, "rank_answer": rank, "top1_answer": rank == 1,
              "p_counterfactual": cf_p, "rank_counterfactual": cf_rank}
    return {name: values[name].float().cpu().numpy() for name in LENS_METRICS}


def role_lens(lm: LoadedModel, sequences: Sequence[Sequence[int]], roles: Sequence[dict[str, int]],
              answers: Sequence[tuple[int, int]], columns: Sequence[str], *, prefix: SharedPrefix | None = None,
              progress: bool = False) -> Grid:
    """The logit lens averaged over programs (95% mean intervals): a Grid with axes ("layer",
    "role"), layer labels 0..n_layers (n_layers = after the last layer), metrics LENS_METRICS.

    answers[i] = (answer token, counterfactual answer token) of program i; a role a program lacks
    is NaN for it.
    """
    from tqdm.auto import tqdm

    if not (len(sequences) == len(roles) == len(answers)) or not sequences:
        raise ModelError("role_lens needs one roles dict and one answer pair per sequence, and a sequence")
    n_layers = lm.sites.n_layers
    accumulator = GridAccumulator(("layer", "role"), {"layer": list(range(n_layers + 1)), "role": list(columns)},
                                  LENS_METRICS)
    for ids, program_roles, (answer, counterfactual) in tqdm(list(zip(sequences, roles, answers)),
                                                             disable=not progress, desc="lens", unit="program"):
        present = [c for c in columns if c in program_roles]
        lens = logit_lens(lm, ids, [program_roles[c] for c in present], answer=answer,
                          counterfactual=counterfactual, prefix=prefix)
        values = {m: np.full(accumulator.pairs.shape, np.nan) for m in LENS_METRICS}
        for metric in LENS_METRICS:
            for k, column in enumerate(present):
                values[metric][:, list(columns).index(column)] = lens[metric][:, k]
        accumulator.add(values)
    return accumulator.grid(info={"method": "lens", "programs": len(sequences)})
