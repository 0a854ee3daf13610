"""The counterfactual kinds of binding programs (edits keep every character where it was):

- root_value: the chain's root constant changes; the answer changes with it.
- query_chain: the query names the tail of another chain holding a different value.
- distractor_value: the first constant off the chain changes, never to the answer's digit; the
  answer must NOT change (a control).
- chain_link: one copy line on the chain reads another variable with a different value.
- swap_lines, move_root, rename_variable: rewrites that keep the answer but tell the competing
  hypotheses apart (`bindexp.tasks.binding.rewrites`).
"""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Any

from bindexp.errors import TaskError
from bindexp.tasks.binding.rewrites import (
    move_root,
    no_rebinding,
    rename_variable,
    swap_lines,
    two_hops_no_rebinding,
)
from bindexp.tasks.edits import other_digit, values_before
from bindexp.tasks.interface import CounterfactualKind
from bindexp.tasks.program import Program


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
    final_values = values_before(program, len(program.text.split("\n")) - 1)
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
    before = values_before(program, line)
    choices = sorted(v for v, value in before.items() if value != program.answer and v != lhs)
    if not choices:
        return None
    return at, rng.choice(choices)


def _needs_two_hops(options: Mapping[str, Any]) -> None:
    if options.get("hops", 1) < 2:
        raise TaskError("chain_link counterfactuals need hops >= 2")


COUNTERFACTUALS = {kind.name: kind for kind in (
    CounterfactualKind("root_value", _root_value, changes_answer=True, edits_value_role=True),
    CounterfactualKind("query_chain", _query_chain, changes_answer=True),
    CounterfactualKind("distractor_value", _distractor_value, changes_answer=False),
    CounterfactualKind("chain_link", _chain_link, changes_answer=True, requires=_needs_two_hops),
    CounterfactualKind("swap_lines", None, changes_answer=False, requires=no_rebinding, rewrite=swap_lines),
    CounterfactualKind("move_root", None, changes_answer=False, requires=two_hops_no_rebinding, rewrite=move_root),
    CounterfactualKind("rename_variable", None, changes_answer=False, requires=no_rebinding, rewrite=rename_variable),
)}
