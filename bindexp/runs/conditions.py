"""The programs an eval-like run scores (eval, robust), one condition per (hops, seq_len), and
scoring them: candidates at the final token when each answer is one next token, else generated and
parsed. Below the runners, so each asks for the same programs the same way.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from bindexp.errors import ModelError, TaskError
from bindexp.models.loading import LoadedModel
from bindexp.models.scoring import Score, candidate_token_ids, score_candidates, score_generate
from bindexp.runs.settings import ConditionsGroup
from bindexp.tasks.program import Program
from bindexp.tasks.prompts import build_prompt, render_chat, template_spec
from bindexp.tasks.registry import get_task, make_programs


@dataclasses.dataclass
class Condition:
    """Programs of one (hops, seq_len) cell, with the few-shot examples they are shown."""

    hops: int | None
    seq_len: int
    shots: list[Program]
    programs: list[Program]


def eval_conditions(settings: ConditionsGroup) -> list[Condition]:
    """Every program the run will score; pure Python and deterministic in the settings."""
    spec = get_task(settings.task)
    if settings.scoring == "candidates" and not template_spec(settings.template).answer_next:
        raise TaskError(f"template {settings.template!r} has the model reason before answering; "
                        "use scoring=generate or auto")
    options = settings.task_options()
    hops_axis: list[int | None] = list(settings.hops) if "hops" in spec.axes else [None]
    conditions = []
    for hops, seq_len in itertools.product(hops_axis, settings.seq_len):
        cell_options = {**options, "hops": hops} if hops is not None else options
        shots = make_programs(spec.name, settings.n_shots, seq_len, settings.seed, stream="shots", **cell_options)
        programs = _draw(settings, seq_len, {s.text for s in shots}, cell_options)
        conditions.append(Condition(hops, seq_len, shots, programs))
    return conditions


def _draw(settings: ConditionsGroup, seq_len: int, exclude: set[str], options: dict[str, Any]) -> list[Program]:
    wanted, n = settings.num_programs, settings.num_programs
    hops = options.get("hops")
    spec = get_task(settings.task)
    if settings.systematic_only and spec.check_systematic is not None:
        spec.check_systematic(seq_len, options)
    while True:
        drawn = make_programs(settings.task, n, seq_len, settings.seed, exclude=exclude, **options)
        kept = [p for p in drawn if not settings.systematic_only or spec.systematic(p)]
        if len(kept) >= wanted or n > 64 * wanted:
            if not kept:
                raise TaskError(f"systematic_only=True kept none of {len(drawn)} programs at seq_len={seq_len}"
                                + (f", hops={hops}" if hops is not None else ""))
            return kept[:wanted]
        n *= 2


def condition_prompts(lm: LoadedModel, condition: Condition, settings: ConditionsGroup) -> list[str]:
    """The prompts the model is shown for a condition's programs (few-shot, template, chat)."""
    prompts = [build_prompt(p, condition.shots, settings.template) for p in condition.programs]
    return [render_chat(lm.tokenizer, prompt) for prompt in prompts] if settings.chat else prompts


def check_prompt_lengths(lm: LoadedModel, conditions: list[Condition], settings: ConditionsGroup) -> None:
    """Every prompt against the model's position limit, before any forward (one line naming it)."""
    for condition in conditions:
        prompts = condition_prompts(lm, condition, settings)
        lm.check_lengths(len(ids) for ids in lm.tokenizer(prompts)["input_ids"])


def score_condition(lm: LoadedModel, condition: Condition, settings: ConditionsGroup) -> list[Score]:
    spec = get_task(settings.task)
    prompts = condition_prompts(lm, condition, settings)
    answers = [p.answer for p in condition.programs]
    common = dict(batch_size=settings.batch_size, progress=settings.progress)
    template = template_spec(settings.template)
    if template.answer_next and _use_candidates(lm, spec.candidates, prompts[0], settings.scoring):
        return score_candidates(lm, prompts, answers, spec.candidates, **common)
    budget = max(settings.max_new_tokens, template.max_new_tokens)
    return score_generate(lm, prompts, answers, spec.answer_type, max_new_tokens=budget, parse=template.parse,
                          **common)


def _use_candidates(lm: LoadedModel, candidates: tuple[str, ...] | None, prompt: str, scoring: str) -> bool:
    if scoring == "generate":
        return False
    if candidates is None:
        if scoring == "candidates":
            raise ModelError("this task has open-ended answers; use scoring=generate or auto")
        return False
    if scoring == "auto":
        try:
            candidate_token_ids(lm.tokenizer, prompt, candidates)
        except ModelError:
            return False
    return True
