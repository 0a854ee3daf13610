"""Subspace interchange at one residual site, shared by DAS and the PCA + probe method.

A site is resid_pre of one layer at given token positions (the same positions in both prompts of
a pair). Interchanging the subspace spanned by the orthonormal rows of `basis` ([k, d]) writes

    h' = h_clean + basis^T basis (h_cf - h_clean)

i.e. the k coordinates along the basis come from the counterfactual run, the rest stay clean
(for DAS, the first k coordinates of the rotated vector R h). The write is a plain torch forward
pre-hook on the decoder layer, which replaces its hidden-states input out of place, so gradients
flow into the basis (nnsight traces would too; a hook keeps the training loop plain torch).
Held-out and training pairs must never share a program text (`check_disjoint`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from random import Random
from typing import Any

import torch

from bindexp.errors import BindexpError, ModelError
from bindexp.models.forward import SharedPrefix, batch_forward, batches, pad_id_of
from bindexp.models.loading import LoadedModel
from bindexp.stats import wilson_interval


@dataclasses.dataclass(frozen=True)
class SitePair:
    """One clean/counterfactual pair, the site's positions and what scores it."""

    ids: tuple[int, ...]
    cf_ids: tuple[int, ...]
    positions: tuple[int, ...]  # token positions interchanged (same in both prompts)
    answer: int  # token of the clean answer
    cf_answer: int  # token of the counterfactual answer: the target of the interchange
    candidates: tuple[int, ...]  # tokens of every candidate answer (the digits)
    texts: tuple[str, str]  # (clean program, counterfactual program): identity for disjointness
    label: int | None = None  # class of the probed variable in the clean prompt (PCA probe)
    cf_label: int | None = None


def site_pairs(tokenized: Sequence[Any], role: str | None,
               label: Callable[[Any], int] | None = None) -> list[SitePair]:
    """SitePairs from tokenized pairs (bindexp.interventions.engine.plan.TokenizedPair): the site is
    `role`'s position, or with role=None every position from the first differing token on (the
    runs are identical before it at every layer, so this interchanges the whole prompt).
    label(program) -> int gives the probed variable's class (e.g. the answer digit)."""
    out = []
    for t in tokenized:
        if role is not None and role not in t.roles:
            raise BindexpError(f"a pair has no {role!r} token (its roles: {', '.join(t.roles)})")
        positions = tuple(range(t.first_diff, len(t.ids))) if role is None else (t.roles[role],)
        out.append(SitePair(tuple(t.ids), tuple(t.cf_ids), positions, t.answer.original, t.answer.counterfactual,
                            tuple(t.answer.candidates), (t.pair.original.text, t.pair.counterfactual.text),
                            label(t.pair.original) if label else None,
                            label(t.pair.counterfactual) if label else None))
    return out


def check_disjoint(train: Sequence[SitePair], heldout: Sequence[SitePair]) -> None:
    """Raise unless no program text (clean or counterfactual) is in both sets."""
    shared = {text for p in train for text in p.texts} & {text for p in heldout for text in p.texts}
    if shared:
        raise BindexpError(f"{len(shared)} program(s) are in both the training and the held-out pairs, "
                           f"e.g. {sorted(shared)[0]!r}")


def split_pairs(pairs: Sequence[SitePair], n_heldout: int, seed: int) -> tuple[list[SitePair], list[SitePair]]:
    """(train, heldout): `n_heldout` pairs drawn by `seed` are held out; training pairs sharing a
    program text with them are dropped, so the two sets are disjoint."""
    order = list(range(len(pairs)))
    Random(seed).shuffle(order)
    heldout = [pairs[i] for i in sorted(order[:n_heldout])]
    texts = {text for p in heldout for text in p.texts}
    train = [pairs[i] for i in sorted(order[n_heldout:]) if not texts & set(pairs[i].texts)]
    return train, heldout


def interchange(clean: torch.Tensor, cf: torch.Tensor, basis: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """clean with its coordinates along basis's rows ([k, d], orthonormal) taken from cf; with
    `weights` ([k], in [0, 1]: a soft mask, boundless DAS), each coordinate only that far."""
    coordinates = (cf - clean) @ basis.T
    return clean + (coordinates if weights is None else coordinates * weights) @ basis


def _layer_hook(lm: LoadedModel, layer: int, edit: Callable[[torch.Tensor], torch.Tensor]):
    def pre(module, args, kwargs):
        if args:
            return (edit(args[0]),) + args[1:], kwargs
        return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

    sites = lm.sites
    return sites.layer(lm.model, layer).register_forward_pre_hook(pre, with_kwargs=True)


def _check(lm: LoadedModel, layer: int, pairs: Sequence[SitePair], start: int) -> None:
    n_layers = lm.sites.n_layers
    if not 0 <= layer < n_layers:
        raise ModelError(f"layer must lie in 0..{n_layers - 1}, got {layer}")
    for p in pairs:
        if len(p.ids) != len(p.cf_ids) or not p.positions or min(p.positions) < start or max(p.positions) >= len(p.ids):
            raise ModelError(f"site positions {p.positions} do not fit a {len(p.ids)}-token pair after a "
                             f"{start}-token shared prefix")


def site_activations(lm: LoadedModel, layer: int, sequences: Sequence[Sequence[int]],
                     positions: Sequence[Sequence[int]], *, prefix: SharedPrefix | None = None,
                     batch_size: int = 8) -> list[torch.Tensor]:
    """resid_pre of `layer` at each sequence's positions: one [len(positions[i]), d] tensor each."""
    start = prefix.length if prefix else 0
    out: list[torch.Tensor | None] = [None] * len(sequences)
    for batch in batches(sequences, start, batch_size, pad_id_of(lm.tokenizer), lm.device):
        def grab(hidden):
            for row, i in enumerate(batch.indices):  # noqa: B023 - runs inside this iteration's forward
                out[i] = hidden[row, [p - start for p in positions[i]]].detach().clone()
            raise _Stop  # nothing after the site is needed

        handle = _layer_hook(lm, layer, grab)
        try:
            with torch.no_grad():
                batch_forward(lm.model, batch, prefix)
        except _Stop:
            pass
        finally:
            handle.remove()
    return out  # type: ignore[return-value]


class _Stop(Exception):
    pass


def interchanged_logits(lm: LoadedModel, layer: int, pairs: Sequence[SitePair], cf_acts: Sequence[torch.Tensor],
                        basis: torch.Tensor, *, prefix: SharedPrefix | None = None,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """Final-position logits [len(pairs), vocab] of the clean prompts with the basis's subspace
    interchanged at the site (one batch; differentiable in `basis` and `weights` when grad is
    enabled; `weights`: a soft mask over the basis's rows, see `interchange`)."""
    start = prefix.length if prefix else 0
    _check(lm, layer, pairs, start)
    (batch,) = batches([p.ids for p in pairs], start, len(pairs), pad_id_of(lm.tokenizer), lm.device)
    rows = torch.tensor([row for row, i in enumerate(batch.indices) for _ in pairs[i].positions], device=lm.device)
    cols = torch.tensor([q - start for i in batch.indices for q in pairs[i].positions], device=lm.device)
    cf = torch.cat([cf_acts[i] for i in batch.indices]).to(lm.device, torch.float32)
    basis = basis.to(lm.device, torch.float32)
    weights = None if weights is None else weights.to(lm.device, torch.float32)

    def write(hidden):
        new = interchange(hidden[rows, cols].float(), cf, basis, weights).to(hidden.dtype)
        return hidden.index_put((rows, cols), new)

    handle = _layer_hook(lm, layer, write)
    try:
        logits = batch_forward(lm.model, batch, prefix).logits[:, -1].float()
    finally:
        handle.remove()
    ordered = torch.empty_like(logits)
    ordered[torch.tensor(batch.indices, device=logits.device)] = logits
    return ordered


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Interchange intervention accuracy with its 95% Wilson interval."""

    successes: int
    n: int
    ci_low: float
    ci_high: float

    @property
    def value(self) -> float:
        return self.successes / self.n if self.n else float("nan")


def predictions(logits: torch.Tensor, pairs: Sequence[SitePair]) -> list[int]:
    """The candidate token each row of `logits` ranks first."""
    return [p.candidates[int(row[list(p.candidates)].argmax())] for row, p in zip(logits, pairs)]


def subspace_iia(lm: LoadedModel, layer: int, pairs: Sequence[SitePair], cf_acts: Sequence[torch.Tensor],
                 basis: torch.Tensor, *, prefix: SharedPrefix | None = None, batch_size: int = 8) -> Accuracy:
    """Share of pairs whose interchanged prediction (argmax over candidates) is the
    counterfactual answer."""
    hits = 0
    for at in range(0, len(pairs), batch_size):
        chunk = pairs[at : at + batch_size]
        with torch.no_grad():
            logits = interchanged_logits(lm, layer, chunk, cf_acts[at : at + batch_size], basis, prefix=prefix)
        hits += sum(pred == p.cf_answer for pred, p in zip(predictions(logits, chunk), chunk))
    return Accuracy(hits, len(pairs), *wilson_interval(hits, len(pairs)))
