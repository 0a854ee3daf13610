"""Choosing the pairs to patch with the model: those it answers right on both sides."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

from bindexp.errors import ModelError
from bindexp.interventions.engine.plan import pair_prompts, pairs_task
from bindexp.models.loading import LoadedModel
from bindexp.models.scoring import score_candidates
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.program import Program

MAX_DRAW_FACTOR = 64  # look at up to this many candidate pairs per pair wanted


def _key(pair: CounterfactualPair) -> tuple[str, str]:
    return pair.original.text, pair.counterfactual.text


def select_pairs(lm: LoadedModel, draw: Callable[[int], list[CounterfactualPair]], wanted: int, *,
                 shots: Sequence[Program], template: str, batch_size: int,
                 finite: bool = False, progress: bool = False) -> tuple[list[CounterfactualPair], int]:
    """`wanted` pairs the model answers right on both sides, from `draw(n)` (the first n candidate
    pairs, the same ones for the same n; `finite`: draw may run out). Returns the pairs (the first
    `wanted` that pass, in draw order) and how many candidates were looked at.

    Candidates are scored in order, a chunk at a time, and scoring stops as soon as `wanted` pairs
    pass: the chunk is sized from the pass rate seen so far (adaptive), so an easy setting scores
    little more than `wanted` pairs. Each chunk's prompts share the few-shot prefix, whose keys and
    values `score_candidates` computes once per chunk. `progress`: a bar of pairs found, with the
    candidates looked at and tqdm's remaining-time estimate."""
    from tqdm.auto import tqdm

    drawn = 2 * wanted
    both_right: dict[tuple[str, str], bool] = {}  # pairs already scored are not scored again
    bar = tqdm(total=wanted, disable=not progress, desc="selecting pairs the model answers right", unit="pair")
    try:
        while True:
            pairs = draw(drawn)
            at = 0
            kept: list[CounterfactualPair] = []
            while at < len(pairs):
                part = pairs[at : at + _chunk_size(wanted - len(kept), len(kept), at, batch_size)]
                _score(lm, [pair for pair in part if _key(pair) not in both_right], both_right, shots, template,
                       batch_size)
                at += len(part)
                kept = [pair for pair in pairs[:at] if both_right[_key(pair)]]
                bar.update(min(len(kept), wanted) - bar.n)
                bar.set_postfix(looked_at=at, refresh=True)
                if len(kept) >= wanted:
                    return kept[:wanted], at
            exhausted = finite and len(pairs) < drawn
            if drawn >= MAX_DRAW_FACTOR * wanted or exhausted:
                if not kept:
                    raise ModelError(f"the model answers none of {len(pairs)} pairs correctly on both sides; "
                                     "use only_correct=False or an easier setting")
                print(f"warning: only {len(kept)} of {len(pairs)} pairs are answered correctly on both sides; "
                      f"patching those instead of {wanted}", file=sys.stderr)
                return kept, len(pairs)
            drawn *= 2
    finally:
        bar.close()


def _chunk_size(needed: int, kept: int, looked_at: int, batch_size: int) -> int:
    """Candidates to score next: enough to find `needed` more pairs at the pass rate seen so far
    (a prior of 1/2 before any), at least half a batch of prompts' worth, at most 16 batches."""
    rate = (kept + 1) / (looked_at + 2)  # Laplace: never 0, so the size stays finite
    return max(max(1, batch_size // 2), min(16 * batch_size, math.ceil(1.2 * needed / rate)))


def _score(lm: LoadedModel, pairs: list[CounterfactualPair], both_right: dict[tuple[str, str], bool],
           shots: Sequence[Program], template: str, batch_size: int) -> None:
    if not pairs:
        return
    prompts = [prompt for pair in pairs for prompt in pair_prompts(pair, shots, template)]
    answers = [answer for pair in pairs for answer in pair.answers]
    scores = score_candidates(lm, prompts, answers, pairs_task(pairs).pair_candidates, batch_size=batch_size)
    both_right.update({_key(pair): scores[2 * k].correct and scores[2 * k + 1].correct
                       for k, pair in enumerate(pairs)})
