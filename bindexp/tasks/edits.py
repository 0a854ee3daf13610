"""The counterfactual edits of the built-in tasks: each swaps one character of a program for
another of the same kind (digit for digit, letter for letter), so both texts have the same length
and character spans and tokenizers give both the same token positions.

binding:
- root_value: the chain's root constant changes; the answer changes with it.
- query_chain: the query names the tail of another chain holding a different value.
- distractor_value: the first constant off the chain changes, never to the answer's digit; the
  answer must NOT change (a control).
- chain_link: one copy line on the chain reads another variable with a different value.
counter:
- item_value: the first list item equal to the counted value becomes another digit (the count drops).
- distractor_item: the first list item not equal to the counted value becomes another such
  digit; the answer must NOT change (a control).
- target_value: the counted value changes (pairs whose counts coincide are dropped).
"""

from __future__ import annotations

from random import Random
from typing import Any, Mapping

from bindexp.tasks.interface import DIGITS, CounterfactualKind
from bindexp.tasks.program import Program, TaskError, run_program


def replace_char(text: str, at: int, char: str) -> str:
    return text[:at] + char + text[at + 1 :]


def other_digit(program: Program, at: int, rng: Random, avoid: tuple[str, ...] = ()) -> tuple[int, str]:
    return at, rng.choice([d for d in DIGITS if d != program.text[at] and d not in avoid])


def _values_before(program: Program, line: int) -> dict[str, Any]:
    """Each variable's value just before `line` (0-based), by running the lines above it."""
    return run_program("\n".join(program.text.split("\n")[:line]))


def _root_value(program: Program, rng: Random) -> tuple[int, str] | None:
    return other_digit(program, program.spans["root_value"][0], rng)


def _distractor_value(program: Program, rng: Random) -> tuple[int, str] | None:
    """The first distractor constant (the `distractor1_value` role, a column of every role grid),
    never changed to the answer's digit."""
    if "distractor1_value" not in program.spans:
        return None
    at, digit = other_digit(program, program.spans["distractor1_value"][0], rng)
    if digit == str(program.answer):  # redraw only then: every other pair stays as it was drawn before
        at, digit = other_digit(program, at, rng, avoid=(digit,))
    return at, digit


def _query_chain(program: Program, rng: Random) -> tuple[int, str] | None:
    final_values = _values_before(program, len(program.text.split("\n")) - 1)
    others = sorted(v for v, value in final_values.items() if value != program.answer)
    if not others:
        return None
    return program.spans["query_var"][0], rng.choice(others)


def _chain_link(program: Program, rng: Random) -> tuple[int, str] | None:
    hops = program.meta["hops"]
    if hops < 2:
        return None
    depth = rng.randint(2, hops)
    line = program.meta["chain_lines"][depth - 1]
    at = program.spans[f"chain{depth}_rhs"][0]
    lhs = program.text[program.spans[f"chain{depth}_lhs"][0]]
    before = _values_before(program, line)
    choices = sorted(v for v, value in before.items() if value != program.answer and v != lhs)
    if not choices:
        return None
    return at, rng.choice(choices)


def _needs_two_hops(options: Mapping[str, Any]) -> None:
    if options.get("hops", 1) < 2:
        raise TaskError("chain_link counterfactuals need hops >= 2")


BINDING_COUNTERFACTUALS = {kind.name: kind for kind in (
    CounterfactualKind("root_value", _root_value, changes_answer=True, edits_value_role=True),
    CounterfactualKind("query_chain", _query_chain, changes_answer=True),
    CounterfactualKind("distractor_value", _distractor_value, changes_answer=False),
    CounterfactualKind("chain_link", _chain_link, changes_answer=True, requires=_needs_two_hops),
)}


def _item_value(program: Program, rng: Random) -> tuple[int, str] | None:
    target = program.span_text("target")
    return other_digit(program, program.spans["match_item"][0], rng, avoid=(target,))


def _distractor_item(program: Program, rng: Random) -> tuple[int, str] | None:
    if "other_item" not in program.spans:
        return None
    return other_digit(program, program.spans["other_item"][0], rng, avoid=(program.span_text("target"),))


def _target_value(program: Program, rng: Random) -> tuple[int, str] | None:
    return other_digit(program, program.spans["target"][0], rng)


COUNTER_COUNTERFACTUALS = {kind.name: kind for kind in (
    CounterfactualKind("item_value", _item_value, changes_answer=True),
    CounterfactualKind("distractor_item", _distractor_item, changes_answer=False),
    CounterfactualKind("target_value", _target_value, changes_answer=True, edits_value_role=True),
)}
