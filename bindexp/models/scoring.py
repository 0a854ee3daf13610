"""Score a model's answers: argmax over candidate answer tokens, or generate and parse.

`score_candidates` is the default: one batched forward per batch of prompts, the prediction is
the candidate token with the highest logit at the final position. `score_generate` is for answers
of several tokens (e.g. loop results) or chat replies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

from bindexp.errors import ModelError
from bindexp.models.forward import encode, final_logits, pad_id_of
from bindexp.models.loading import LoadedModel
from bindexp.tasks.prompts import parse_answer


@dataclasses.dataclass(frozen=True)
class Score:
    """The model's answer to one prompt."""

    prediction: str  # the predicted answer as text ("" when nothing parseable was generated)
    correct: bool
    margin: float  # logit of the top candidate minus the runner-up (nan when generating)
    p_answer: float  # probability of the correct answer's token over the whole vocabulary


def candidate_token_ids(tokenizer: Any, prompt: str, candidates: Sequence[str]) -> list[int]:
    """The token id each candidate answer adds right after `prompt`.

    Raises ModelError when a candidate is not exactly one new token after the prompt's own
    tokens (the answer would merge with the prompt's last token, or span several tokens).
    """
    base = encode(tokenizer, [prompt])[0].ids
    ids = []
    for candidate in candidates:
        full = encode(tokenizer, [prompt + candidate])[0].ids
        if full[: len(base)] != base or len(full) != len(base) + 1:
            raise ModelError(
                f"answer {candidate!r} is not a single next token after the prompt for this tokenizer; "
                "use scoring=generate"
            )
        ids.append(full[-1])
    if len(set(ids)) != len(ids):
        raise ModelError("two candidate answers map to the same token")
    return ids


def score_candidates(
    lm: LoadedModel,
    prompts: Sequence[str],
    answers: Sequence[Any],
    candidates: Sequence[str],
    *,
    batch_size: int = 16,
    reuse_prefix: bool = True,
    progress: bool = False,
) -> list[Score]:
    """Score each prompt by the argmax over `candidates` at its final token."""
    if not prompts:
        return []
    answer_text = [str(a) for a in answers]
    unknown = sorted(set(answer_text) - set(candidates))
    if unknown:
        raise ModelError(f"answer {unknown[0]!r} is not among the task's candidates {list(candidates)}")
    token_ids = candidate_token_ids(lm.tokenizer, prompts[0], candidates)
    sequences = [e.ids for e in encode(lm.tokenizer, prompts)]
    lm.check_lengths(len(ids) for ids in sequences)
    logits = final_logits(
        lm.model, lm.tokenizer, sequences, batch_size=batch_size, reuse_prefix=reuse_prefix, progress=progress
    )
    log_probs = torch.log_softmax(logits, dim=-1)
    cand_logits = logits[:, token_ids]
    top2 = cand_logits.topk(min(2, len(candidates)), dim=-1)
    answer_ids = torch.tensor([token_ids[candidates.index(a)] for a in answer_text])
    p_answer = log_probs.gather(1, answer_ids[:, None]).squeeze(1).exp()
    scores = []
    for row, answer in enumerate(answer_text):
        prediction = candidates[int(top2.indices[row, 0])]
        values = top2.values[row]
        margin = float(values[0] - values[1]) if len(values) > 1 else math.inf
        scores.append(Score(prediction, prediction == answer, margin, float(p_answer[row])))
    return scores


def score_generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    answers: Sequence[Any],
    answer_type: type,
    *,
    max_new_tokens: int = 8,
    batch_size: int = 16,
    progress: bool = False,
    parse: str = "first",
) -> list[Score]:
    """Greedy-generate a completion for each prompt and parse its answer: the first int (or bool),
    or with parse="final" the final answer (`Answer: x`, else the last value)."""
    from tqdm.auto import tqdm

    tokenizer = lm.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the last column
    scores = []
    try:
        for at in tqdm(range(0, len(prompts), batch_size), disable=not progress, desc="generating"):
            chunk = list(prompts[at : at + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(lm.device)
            lm.check_lengths(enc["attention_mask"].sum(1).tolist(), generated=max_new_tokens)
            with torch.inference_mode():
                out = lm.model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id_of(tokenizer)
                )
            completions = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for completion, answer in zip(completions, answers[at : at + batch_size]):
                parsed = parse_answer(completion, answer_type, parse)
                text = "" if parsed is None else str(parsed)
                scores.append(Score(text, parsed is not None and parsed == answer, math.nan, math.nan))
    finally:
        tokenizer.padding_side = side
    return scores
