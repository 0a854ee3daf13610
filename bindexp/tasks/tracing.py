"""The other value-tracing tasks: loops, increments, sequences, counters, fibonacci, exceptions,
boolean logic. Each generator takes `(length, rng)` and returns a `Program` whose answer comes from
executing it, never from a separate formula.
"""

from __future__ import annotations

import dataclasses
import re
import string
from random import Random
from typing import Sequence

from bindexp.tasks.program import Program, TaskError, execute_query

_VARS = [c for c in string.ascii_lowercase if c not in "il"]  # `i` is the loop index


def finish_program(task: str, lines: list[str], query_var: str, length: int, **meta) -> Program:
    """Append the query comment, run the code for the answer, and record the basic spans."""
    text = "\n".join(lines) + f"\n#{query_var}: "
    query_at = len(text) - len(query_var) - 2
    return Program(
        task=task,
        text=text,
        answer=execute_query(text, query_var),
        query_var=query_var,
        seq_len=length,
        spans={"query_var": (query_at, query_at + len(query_var)), "final": (len(text) - 1, len(text))},
        meta={"length": length, **meta},
    )


def _check_length(length: int, minimum: int = 1) -> None:
    if length < minimum:
        raise TaskError(f"length must be at least {minimum}, got {length}")


def loop_program(length: int, rng: Random) -> Program:
    """`for i in range(length)` adding a fixed increment."""
    _check_length(length, 0)
    x, start, step = rng.choice(_VARS), rng.randint(0, 9), rng.randint(1, 5)
    lines = [f"{x} = {start}", f"for i in range({length}):", f"    {x} += {step}"]
    return finish_program("loop", lines, x, length, start=start, step=step)


def loop_unrolled_program(length: int, rng: Random) -> Program:
    """The `loop` task written out line by line."""
    _check_length(length, 0)
    x, start, step = rng.choice(_VARS), rng.randint(0, 9), rng.randint(1, 5)
    lines = [f"{x} = {start}"] + [f"{x} += {step}"] * length
    return finish_program("loop_unrolled", lines, x, length, start=start, step=step)


def varying_increments_program(length: int, rng: Random) -> Program:
    """A start value followed by `length` increments and decrements of different sizes."""
    _check_length(length, 0)
    x = rng.choice(_VARS)
    lines = [f"{x} = {rng.randint(0, 9)}"]
    for _ in range(length):
        lines.append(f"{x} {rng.choice('+-')}= {rng.randint(1, 5)}")
    return finish_program("varying_increments", lines, x, length)


def arithmetic_sequence_program(length: int, rng: Random) -> Program:
    """Named terms `t0 .. t{length}` of an arithmetic sequence; the query asks for one of them."""
    _check_length(length)
    name, start, step = rng.choice(_VARS), rng.randint(0, 9), rng.randint(1, 5)
    lines = [f"{name}0 = {start}"]
    lines += [f"{name}{k} = {name}{k - 1} + {step}" for k in range(1, length + 1)]
    term = rng.randint(1, length)
    return finish_program("arithmetic_sequence", lines, f"{name}{term}", length, term=term, step=step)


def counter_program(length: int, rng: Random) -> Program:
    """Count how often a value occurs in a list of `length` digits."""
    _check_length(length)
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


def fibonacci_program(length: int, rng: Random) -> Program:
    """`length` steps of a fibonacci recurrence from small start values."""
    _check_length(length, 0)
    first, second = rng.randint(0, 2), rng.randint(1, 3)
    lines = [f"a, b = {first}, {second}", f"for i in range({length}):", "    a, b = b, a + b"]
    return finish_program("fibonacci", lines, "a", length, first=first, second=second)


def exception_program(length: int, rng: Random) -> Program:
    """`length` try/except blocks around an integer division that may divide by zero."""
    _check_length(length)
    x = rng.choice(_VARS)
    lines = [f"{x} = {rng.randint(10, 60)}"]
    for _ in range(length):
        divisor = rng.choice([0, 0, 1, 2, 3])
        lines += [
            "try:",
            f"    {x} = {x} // {divisor}",
            "except ZeroDivisionError:",
            f"    {x} = {x} + {rng.randint(1, 9)}",
        ]
    return finish_program("exception", lines, x, length)


def boolean_program(length: int, rng: Random) -> Program:
    """Two boolean constants, then `length` lines combining earlier variables with and/or/not."""
    _check_length(length)
    if length + 2 > len(_VARS):
        raise TaskError(f"boolean programs need {length + 2} distinct variables; at most {len(_VARS) - 2} lines")
    names = rng.sample(_VARS, length + 2)
    lines = [f"{names[0]} = {rng.choice([True, False])}", f"{names[1]} = {rng.choice([True, False])}"]
    for k in range(2, length + 2):
        left, right = rng.sample(names[:k], 2)
        left = f"not {left}" if rng.random() < 0.3 else left
        right = f"not {right}" if rng.random() < 0.3 else right
        lines.append(f"{names[k]} = {left} {rng.choice(['and', 'or'])} {right}")
    return finish_program("boolean", lines, names[-1], length)
