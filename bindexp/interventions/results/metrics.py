"""Patching metrics, defined once.

For a pair with original answer token o and counterfactual answer token c, at the final position:
- LD (logit difference) = logit[c] - logit[o].
- normalized effect = (LD_patched - LD_clean) / (LD_cf - LD_clean): 0 = the patch did nothing,
  1 = the output is as in the counterfactual run. NaN when the two runs' LDs coincide (e.g. a
  control counterfactual whose answer does not change).
- IIA (interchange intervention accuracy) = share of pairs whose patched prediction, the argmax
  over the task's candidate answers, is the counterfactual answer.
- p_original / p_counterfactual: probabilities of the two answers' tokens over the vocabulary.
- p_original_change = p_original(patched) - p_original(clean): what the original answer lost.
- flip = 1 when the patched prediction (argmax over the candidates) is no longer the original
  answer: its mean is the flip rate, the metric of control counterfactuals, whose two answers are
  the same token (LD is 0, the normalized effect NaN, and IIA would only be accuracy).
- ld_shift = LD_patched - LD_clean and ld_gap = LD_cf - LD_clean (the same for every cell of a
  pair): mean(ld_shift) / mean(ld_gap) is the ratio of means, a normalized effect that small gaps
  cannot amplify.
"""

from __future__ import annotations

import dataclasses

import torch

METRICS = ("normalized_effect", "logit_diff", "iia", "p_original", "p_counterfactual", "p_original_change",
           "flip", "ld_shift", "ld_gap")
_FLAT = 1e-6


@dataclasses.dataclass(frozen=True)
class AnswerTokens:
    """Token ids needed to score one pair."""

    original: int
    counterfactual: int
    candidates: tuple[int, ...]  # every candidate answer's token (the digits)


def logit_diff(logits: torch.Tensor, answer: AnswerTokens) -> torch.Tensor:
    """LD over the last dimension of `logits` ([..., vocab] -> [...])."""
    return logits[..., answer.counterfactual] - logits[..., answer.original]


def normalized_effect(ld_patched: torch.Tensor, ld_clean: float, ld_cf: float) -> torch.Tensor:
    gap = ld_cf - ld_clean
    if abs(gap) < _FLAT:
        return torch.full_like(ld_patched, float("nan"))
    return (ld_patched - ld_clean) / gap


def predicted_candidate(logits: torch.Tensor, answer: AnswerTokens) -> torch.Tensor:
    """The index (into `answer.candidates`) of the candidate each row of `logits` ([cells, vocab])
    ranks first: the patched prediction, e.g. 7 for the digit 7 among the ten digits."""
    candidates = torch.tensor(answer.candidates, device=logits.device)
    return logits[:, candidates].float().argmax(dim=-1)


def cell_metrics(logits: torch.Tensor, answer: AnswerTokens, clean_logits: torch.Tensor, ld_cf: float
                 ) -> dict[str, torch.Tensor]:
    """Every metric for a stack of patched final-position logits ([cells, vocab]) of one pair."""
    logits, clean_logits = logits.float(), clean_logits.float()
    ld_clean = float(logit_diff(clean_logits, answer))
    p_clean = float(torch.softmax(clean_logits, dim=-1)[answer.original])
    ld = logit_diff(logits, answer)
    probs = torch.softmax(logits, dim=-1)
    candidates = torch.tensor(answer.candidates, device=logits.device)
    predicted = candidates[predicted_candidate(logits, answer)]
    return {
        "normalized_effect": normalized_effect(ld, ld_clean, ld_cf),
        "logit_diff": ld,
        "iia": (predicted == answer.counterfactual).float(),
        "p_original": probs[:, answer.original],
        "p_counterfactual": probs[:, answer.counterfactual],
        "p_original_change": probs[:, answer.original] - p_clean,
        "flip": (predicted != answer.original).float(),
        "ld_shift": ld - ld_clean,
        "ld_gap": torch.full_like(ld, ld_cf - ld_clean),
    }
