"""Choosing the pairs to patch with the model: those it answers right on both sides."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from bindexp.interventions.plan import pair_prompts, pairs_task
from bindexp.models.loading import LoadedModel, ModelError
from bindexp.models.scoring import score_candidates
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.program import Program

MAX_DRAW_FACTOR = 64  # look at up to this many candidate pairs per pair wanted


def _key(pair: CounterfactualPair) -> tuple[str, str]:
    return pair.original.text, pair.counterfactual.text


def select_pairs(lm: LoadedModel, draw: Callable[[int], list[CounterfactualPair]], wanted: int, *,
                 shots: Sequence[Program], template: str, batch_size: int,
                 finite: bool = False) -> tuple[list[CounterfactualPair], int]:
    """`wanted` pairs the model answers right on both sides, from `draw(n)` (the first n candidate
    pairs, the same ones for the same n; `finite`: draw may run out). Returns the pairs and how
    many candidates were looked at."""
    drawn = 2 * wanted
    both_right: dict[tuple[str, str], bool] = {}  # pairs already scored are not scored again
    while True:
        pairs = draw(drawn)
        new = [pair for pair in pairs if _key(pair) not in both_right]
        if new:
            prompts = [prompt for pair in new for prompt in pair_prompts(pair, shots, template)]
            answers = [answer for pair in new for answer in pair.answers]
            scores = score_candidates(lm, prompts, answers, pairs_task(new).pair_candidates, batch_size=batch_size)
            both_right.update({_key(pair): scores[2 * k].correct and scores[2 * k + 1].correct
                               for k, pair in enumerate(new)})
        kept = [pair for pair in pairs if both_right[_key(pair)]]
        exhausted = finite and len(pairs) < drawn
        if len(kept) >= wanted or drawn >= MAX_DRAW_FACTOR * wanted or exhausted:
            if not kept:
                raise ModelError(f"the model answers none of {drawn} pairs correctly on both sides; "
                                 "use only_correct=False or an easier setting")
            if len(kept) < wanted:
                print(f"warning: only {len(kept)} of {drawn} pairs are answered correctly on both sides; "
                      f"patching those instead of {wanted}", file=sys.stderr)
            return kept[:wanted], drawn
        drawn *= 2
