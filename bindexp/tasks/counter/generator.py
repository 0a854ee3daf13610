"""Counter programs: count how often a value occurs in a list of digits; their analyser (the token
roles of any program of that shape) and the columns of a role grid.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from random import Random

from bindexp.errors import TaskError
from bindexp.tasks.program import Program, check_length, finish_program


def counter_program(length: int, rng: Random) -> Program:
    """Count how often a value occurs in a list of `length` digits."""
    check_length(length)
    items = [rng.randint(0, 5) for _ in range(length)]
    target = rng.choice(items)
    lines = [
        f"items = {items}",
        "count = 0",
        "for v in items:",
        f"    if v == {target}:",
        "        count += 1",
    ]
    return analyse_counter("\n".join(lines) + "\n#count: ", length)


_COUNTER_ITEMS = re.compile(r"items = \[[0-9, ]*\]")
_COUNTER_TARGET = re.compile(r"    if v == ([0-9]+):")


def analyse_counter(text: str, length: int | None = None) -> Program:
    """A counter program (generated or hand-written in the same shape) with its roles: the first
    list item equal to the counted value (`match_item`), the first one not equal (`other_item`),
    the counted value (`target`), the query variable and the final token."""
    lines = text.split("\n")
    if len(lines) != 6 or not _COUNTER_ITEMS.fullmatch(lines[0]) or lines[-1] != "#count: ":
        raise TaskError(f"not a counter program: {text!r}")
    target = _COUNTER_TARGET.fullmatch(lines[3])
    if not target:
        raise TaskError(f"line 4 of a counter program must read '    if v == N:', got {lines[3]!r}")
    items = [(m.start(), m.end(), m.group()) for m in re.finditer(r"[0-9]+", lines[0])]
    program = finish_program("counter", lines[:-1], "count", len(items) if length is None else length,
                             target=int(target.group(1)))
    at = sum(len(line) + 1 for line in lines[:3]) + target.start(1)
    spans = {**program.spans, "target": (at, at + len(target.group(1)))}
    matching = [(a, b) for a, b, value in items if value == target.group(1)]
    others = [(a, b) for a, b, value in items if value != target.group(1)]
    if matching:
        spans["match_item"] = matching[0]
    if others:
        spans["other_item"] = others[0]
    return dataclasses.replace(program, spans=spans)


def counter_roles(programs: Sequence[Program]) -> list[str]:
    """Columns of a counter role grid: both list items (on the first line), the counted value,
    the query variable and the final token."""
    return ["match_item", "other_item", "target", "query_var", "final"]
