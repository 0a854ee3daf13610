"""Dense supervision for training on binding programs: per-line values, extra queries,
relabelling, and the (letter, digit) pairs a training run holds out.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from random import Random

from bindexp.tasks.binding.analyser import analyse_binding
from bindexp.tasks.binding.generator import LETTERS
from bindexp.tasks.program import Program, run_program
from bindexp.vocab import DIGITS

Pair = tuple[str, str]  # (variable letter, digit)
ALL_PAIRS: tuple[Pair, ...] = tuple(itertools.product(LETTERS, DIGITS))
_CONSTANT_LINE = re.compile(r"^([a-z]) ?= ?([0-9])$", re.MULTILINE)


def constant_pairs(program: Program) -> set[Pair]:
    """Every (letter, digit) a line of `program` assigns as a constant (`x = d`)."""
    return set(_CONSTANT_LINE.findall(program.code))


def root_pair(program: Program) -> Pair:
    """The (letter, digit) of the query chain's constant line."""
    return program.span_text("chain1_lhs"), program.span_text("root_value")


def line_values(program: Program, final: dict[str, int]) -> list[int]:
    """The value each assignment line leaves in its variable, by Python's semantics. `final` is
    `run_program(program.code)`: when no variable is assigned twice its values are every line's
    values; otherwise each line prefix is run."""
    lines = program.code.splitlines()
    names = [line.split("=")[0].strip() for line in lines]
    if len(set(names)) == len(names):
        return [final[name] for name in names]
    return [run_program("\n".join(lines[: i + 1]))[name] for i, name in enumerate(names)]


def extra_queries(program: Program, values: dict[str, int], n: int, rng: Random) -> list[tuple[str, int]]:
    """`n` further (variable, value) queries about other variables than the program's own (fewer
    if it has fewer); `values` is `run_program(program.code)`, what Python computes at the end."""
    others = sorted(name for name in values if name != program.query_var)
    return [(name, values[name]) for name in rng.sample(others, min(n, len(others)))]


def relabel_binding(program: Program, rng: Random) -> Program:
    """The program with its letters and its digits each renamed by a random permutation, analysed
    anew (so its answer is again what Python computes)."""
    letters, digits = list(LETTERS), list("0123456789")
    rng.shuffle(letters)
    rng.shuffle(digits)
    table = str.maketrans(LETTERS + "0123456789", "".join(letters) + "".join(digits))
    relabelled = analyse_binding(program.text.translate(table), seq_len=program.seq_len)
    return dataclasses.replace(relabelled, seed=program.seed, meta={**program.meta, **relabelled.meta})
