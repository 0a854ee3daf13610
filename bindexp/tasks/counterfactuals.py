"""Counterfactual pairs for binding programs: the same program with one thing changed.

Every edit swaps one character for another of the same kind (digit for digit, letter for
letter), so the two texts have the same length and the same character spans, and tokenizers
that treat digits and single letters alike give both the same token positions.

Kinds:
- root_value: the chain's root constant changes; the answer changes with it.
- query_chain: the query names the tail of another chain holding a different value.
- distractor_value: the first constant off the chain changes; the answer must NOT change (a control).
- chain_link: one copy line on the chain reads another variable with a different value.
"""

from __future__ import annotations

import dataclasses
from random import Random
from typing import Any, Callable

from bindexp.tasks.binding import analyse_binding
from bindexp.tasks.program import Program, TaskError, derive_rng, run_program
from bindexp.tasks.registry import make_programs

KINDS = ("root_value", "query_chain", "distractor_value", "chain_link")
CHANGES_ANSWER = {"root_value": True, "query_chain": True, "distractor_value": False, "chain_link": True}


@dataclasses.dataclass(frozen=True)
class CounterfactualPair:
    """An original program, its counterfactual, and what was changed."""

    original: Program
    counterfactual: Program
    kind: str
    changed_at: int  # character offset of the edit

    @property
    def answers(self) -> tuple[Any, Any]:
        return self.original.answer, self.counterfactual.answer

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "changed_at": self.changed_at, "original": self.original.text,
                "counterfactual": self.counterfactual.text, "answers": list(map(str, self.answers))}


def _edit(text: str, at: int, char: str) -> str:
    return text[:at] + char + text[at + 1 :]


def _other_digit(program: Program, at: int, rng: Random) -> tuple[int, str]:
    return at, rng.choice([d for d in "0123456789" if d != program.text[at]])


def _root_value(program: Program, rng: Random) -> tuple[int, str] | None:
    return _other_digit(program, program.spans["root_value"][0], rng)


def _distractor_value(program: Program, rng: Random) -> tuple[int, str] | None:
    """The first distractor constant (the `distractor1_value` role, a column of every role grid)."""
    if "distractor1_value" not in program.spans:
        return None
    return _other_digit(program, program.spans["distractor1_value"][0], rng)


def _values_before(program: Program, line: int) -> dict[str, Any]:
    """Each variable's value just before `line` (0-based), by running the lines above it."""
    return run_program("\n".join(program.text.split("\n")[:line]))


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


_EDITS: dict[str, Callable[[Program, Random], tuple[int, str] | None]] = {
    "root_value": _root_value,
    "query_chain": _query_chain,
    "distractor_value": _distractor_value,
    "chain_link": _chain_link,
}


def make_counterfactual(program: Program, kind: str, rng: Random) -> CounterfactualPair | None:
    """The pair for `program`, or None when this program admits no such edit.

    The sanity gate: a pair whose answers coincide when the kind should change the answer (or
    differ when it should not) is dropped (None).
    """
    if kind not in _EDITS:
        raise TaskError(f"unknown counterfactual {kind!r}; known: {', '.join(KINDS)}")
    if program.task != "binding":
        raise TaskError(f"counterfactuals are defined for binding programs, not {program.task!r}")
    edit = _EDITS[kind](program, rng)
    if edit is None:
        return None
    at, char = edit
    counterfactual = analyse_binding(_edit(program.text, at, char), seq_len=program.seq_len)
    counterfactual = dataclasses.replace(counterfactual, seed=program.seed, meta={**counterfactual.meta,
                                                                                  "draw": program.meta.get("draw")})
    if (counterfactual.answer != program.answer) != CHANGES_ANSWER[kind]:
        return None
    return CounterfactualPair(program, counterfactual, kind, at)


def make_pairs(
    kind: str,
    n: int,
    seq_len: int,
    seed: int,
    *,
    exclude: frozenset[str] | set[str] = frozenset(),
    keep: Callable[[CounterfactualPair], bool] | None = None,
    **options: Any,
) -> list[CounterfactualPair]:
    """`n` seeded pairs of binding programs and their counterfactuals, passing `keep` if given.

    Programs that admit no edit of this kind, or fail the sanity gate or `keep`, are skipped and
    further programs drawn, deterministically.
    """
    if kind not in _EDITS:
        raise TaskError(f"unknown counterfactual {kind!r}; known: {', '.join(KINDS)}")
    if kind == "chain_link" and options.get("hops", 1) < 2:
        raise TaskError("chain_link counterfactuals need hops >= 2")
    pairs: list[CounterfactualPair] = []
    batch = max(n, 8)
    drawn = 0
    while len(pairs) < n:
        if drawn > 50 * n + 500:
            raise TaskError(f"could not find {n} usable {kind} pairs at seq_len={seq_len}; try other options")
        programs = make_programs("binding", drawn + batch, seq_len, seed, exclude=exclude, **options)[drawn:]
        for program in programs:
            rng = derive_rng("counterfactual", kind, seed, program.meta["draw"])
            pair = make_counterfactual(program, kind, rng)
            if pair is not None and (keep is None or keep(pair)):
                pairs.append(pair)
                if len(pairs) == n:
                    break
        drawn += batch
    return pairs
