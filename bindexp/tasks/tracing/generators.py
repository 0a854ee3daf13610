"""The simple value-tracing tasks: loops, increments, sequences, fibonacci, exceptions, boolean
logic. Each generator takes `(length, rng)` and returns a `Program` whose answer comes from
executing it, never from a separate formula.
"""

from __future__ import annotations

import string
from random import Random

from bindexp.errors import TaskError
from bindexp.tasks.program import Program, check_length, finish_program

_VARS = [c for c in string.ascii_lowercase if c not in "il"]  # `i` is the loop index


def loop_program(length: int, rng: Random) -> Program:
    """`for i in range(length)` adding a fixed increment."""
    check_length(length, 0)
    x, start, step = rng.choice(_VARS), rng.randint(0, 9), rng.randint(1, 5)
    lines = [f"{x} = {start}", f"for i in range({length}):", f"    {x} += {step}"]
    return finish_program("loop", lines, x, length, start=start, step=step)


def loop_unrolled_program(length: int, rng: Random) -> Program:
    """The `loop` task written out line by line."""
    check_length(length, 0)
    x, start, step = rng.choice(_VARS), rng.randint(0, 9), rng.randint(1, 5)
    lines = [f"{x} = {start}"] + [f"{x} += {step}"] * length
    return finish_program("loop_unrolled", lines, x, length, start=start, step=step)


def varying_increments_program(length: int, rng: Random) -> Program:
    """A start value followed by `length` increments and decrements of different sizes."""
    check_length(length, 0)
    x = rng.choice(_VARS)
    lines = [f"{x} = {rng.randint(0, 9)}"]
    for _ in range(length):
        lines.append(f"{x} {rng.choice('+-')}= {rng.randint(1, 5)}")
    return finish_program("varying_increments", lines, x, length)


def arithmetic_sequence_program(length: int, rng: Random) -> Program:
    """Named terms `t0 .. t{length}` of an arithmetic sequence; the query asks for one of them."""
    check_length(length)
    name, start, step = rng.choice(_VARS), rng.randint(0, 9), rng.randint(1, 5)
    lines = [f"{name}0 = {start}"]
    lines += [f"{name}{k} = {name}{k - 1} + {step}" for k in range(1, length + 1)]
    term = rng.randint(1, length)
    return finish_program("arithmetic_sequence", lines, f"{name}{term}", length, term=term, step=step)


def fibonacci_program(length: int, rng: Random) -> Program:
    """`length` steps of a fibonacci recurrence from small start values."""
    check_length(length, 0)
    first, second = rng.randint(0, 2), rng.randint(1, 3)
    lines = [f"a, b = {first}, {second}", f"for i in range({length}):", "    a, b = b, a + b"]
    return finish_program("fibonacci", lines, "a", length, first=first, second=second)


def exception_program(length: int, rng: Random) -> Program:
    """`length` try/except blocks around an integer division that may divide by zero."""
    check_length(length)
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
    check_length(length)
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
