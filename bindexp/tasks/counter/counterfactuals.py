"""The counterfactual kinds of counter programs:

- item_value: the first list item equal to the counted value becomes another digit (the count drops).
- distractor_item: the first list item not equal to the counted value becomes another such
  digit; the answer must NOT change (a control).
- target_value: the counted value changes (pairs whose counts coincide are dropped).
"""

from __future__ import annotations

from random import Random

from bindexp.tasks.edits import other_digit
from bindexp.tasks.interface import CounterfactualKind
from bindexp.tasks.program import Program


def _item_value(program: Program, rng: Random) -> tuple[int, str] | None:
    target = program.span_text("target")
    return other_digit(program, program.spans["match_item"][0], rng, avoid=(target,))


def _distractor_item(program: Program, rng: Random) -> tuple[int, str] | None:
    if "other_item" not in program.spans:
        return None
    return other_digit(program, program.spans["other_item"][0], rng, avoid=(program.span_text("target"),))


def _target_value(program: Program, rng: Random) -> tuple[int, str] | None:
    return other_digit(program, program.spans["target"][0], rng)


COUNTERFACTUALS = {kind.name: kind for kind in (
    CounterfactualKind("item_value", _item_value, changes_answer=True),
    CounterfactualKind("distractor_item", _distractor_item, changes_answer=False),
    CounterfactualKind("target_value", _target_value, changes_answer=True, edits_value_role=True),
)}
