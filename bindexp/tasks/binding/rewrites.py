"""Counterfactual kinds that tell the competing hypotheses of binding apart: pure text rewrites
that keep the answer Python computes (the sanity gate checks it pair by pair) and keep the text's
length and token shape (so the two prompts align token by token), but change what one hypothesis
reads while leaving another's reading alone.

- swap_lines: the query's assignment line trades places with another line of the same shape
  (constant with constant, copy with copy) where the swap is legal (every variable ends with the
  value it had) and the other line's value differs from the answer. Reading by name
  (pointer-following, direct lookup) sees the same program; reading by line index (positional)
  finds the other line's value.
- move_root: the chain's constant moves to another constant line read before the chain's second
  line: the two lines trade constants and the chain's second line reads the other variable, so
  the answer stays while the root line and its variable change (hops >= 2). Direct lookup by the
  root's address finds the other line; a carried value is the same.
- rename_variable: the query's variable and a variable off the chain (holding another value)
  trade names everywhere, the query included. Reading by line index sees the same program;
  reading by name finds the other variable.

Programs with rebinding are refused (a name must mean one line).
"""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Any

from bindexp.errors import TaskError
from bindexp.tasks.binding.analyser import LINE
from bindexp.tasks.program import Program, run_program

Rewritten = tuple[str, tuple[int, ...]]


def parsed_lines(program: Program) -> list[tuple[str, str]]:
    """(variable, right-hand side) of each assignment line."""
    return [LINE.match(line).groups() for line in program.text.split("\n")[:-1]]  # type: ignore[union-attr]


def line_value(program: Program, line: int) -> int:
    """The value `line` leaves in its variable, by running the lines up to it."""
    lines = program.text.split("\n")
    return run_program("\n".join(lines[: line + 1]))[parsed_lines(program)[line][0]]


def _final_values(text: str) -> dict[str, Any] | None:
    try:
        return run_program(text[: text.rindex("#")])
    except TaskError:  # e.g. a name read before it is assigned: the edit is not legal
        return None


def swap_lines(program: Program, rng: Random) -> Rewritten | None:
    if program.meta["rebound_lines"]:
        return None
    lines, parsed = program.text.split("\n"), parsed_lines(program)
    query_line = program.meta["chain_lines"][-1]
    before = _final_values(program.text)
    choices = []
    for other in range(len(parsed)):
        if other == query_line or parsed[other][1].isdigit() != parsed[query_line][1].isdigit():
            continue
        swapped = list(lines)
        swapped[query_line], swapped[other] = lines[other], lines[query_line]
        text = "\n".join(swapped)
        if _final_values(text) == before and line_value(program, other) != program.answer:
            choices.append((other, text))
    if not choices:
        return None
    other, text = rng.choice(choices)
    line_map = list(range(len(parsed)))
    line_map[query_line], line_map[other] = other, query_line
    return text, tuple(line_map)


def move_root(program: Program, rng: Random) -> Rewritten | None:
    if program.meta["rebound_lines"] or program.meta["hops"] < 2:
        return None
    parsed = parsed_lines(program)
    root, second = program.meta["chain_lines"][:2]
    constant = parsed[root][1]
    choices = [line for line in range(second) if line != root and parsed[line][1].isdigit()
               and parsed[line][1] != constant]
    if not choices:
        return None
    other = rng.choice(choices)
    starts = [0]
    for line in program.text.split("\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    text = list(program.text)
    rhs = lambda line: starts[line + 1] - 2  # noqa: E731 - the last character of the line
    text[rhs(root)], text[rhs(other)] = parsed[other][1], constant
    text[rhs(second)] = parsed[other][0]
    return "".join(text), tuple(range(len(parsed)))


def rename_variable(program: Program, rng: Random) -> Rewritten | None:
    if program.meta["rebound_lines"]:
        return None
    parsed = parsed_lines(program)
    chain = set(program.meta["chain_lines"])
    values = _final_values(program.text) or {}
    choices = sorted(lhs for line, (lhs, _) in enumerate(parsed) if line not in chain and values.get(lhs) != program.answer)
    if not choices:
        return None
    other, query = rng.choice(choices), program.query_var
    text = program.text.translate(str.maketrans({query: other, other: query}))
    return text, tuple(range(len(parsed)))


def no_rebinding(options: Mapping[str, Any]) -> None:
    if options.get("rebinding"):
        raise TaskError("swap_lines, move_root and rename_variable need programs without rebinding (a name must "
                        "mean one line): use rebinding=False")


def two_hops_no_rebinding(options: Mapping[str, Any]) -> None:
    no_rebinding(options)
    if options.get("hops", 1) < 2:
        raise TaskError("move_root counterfactuals need hops >= 2 (a chain line that reads the root)")
