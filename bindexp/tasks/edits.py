"""What the counterfactual edits of every task share: each swaps one character of a program for
another of the same kind (digit for digit, letter for letter), so both texts have the same length
and character spans and tokenizers give both the same token positions. A task's own edits are in
its package (`bindexp.tasks.<task>.counterfactuals`).
"""

from __future__ import annotations

from random import Random
from typing import Any

from bindexp.tasks.program import Program, run_program
from bindexp.vocab import DIGITS


def replace_char(text: str, at: int, char: str) -> str:
    return text[:at] + char + text[at + 1 :]


def other_digit(program: Program, at: int, rng: Random, avoid: tuple[str, ...] = ()) -> tuple[int, str]:
    return at, rng.choice([d for d in DIGITS if d != program.text[at] and d not in avoid])


def values_before(program: Program, line: int) -> dict[str, Any]:
    """Each variable's value just before `line` (0-based), by running the lines above it."""
    return run_program("\n".join(program.text.split("\n")[:line]))
