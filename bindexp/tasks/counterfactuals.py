"""Counterfactual pairs: the same program with one thing changed, as the program's task declares
(`TaskSpec.counterfactuals`; a built-in task's edits are in `bindexp.tasks.<task>.counterfactuals`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from bindexp.errors import TaskError
from bindexp.tasks.edits import replace_char
from bindexp.tasks.program import Program, derive_rng
from bindexp.tasks.registry import DEFAULT_TASK, get_task, make_programs


@dataclasses.dataclass(frozen=True)
class CounterfactualPair:
    """An original program, its counterfactual, and what was changed."""

    original: Program
    counterfactual: Program
    kind: str
    changed_at: int  # character offset of the (first) edit
    line_map: tuple[int, ...] | None = None  # the original's line i is the counterfactual's line_map[i] (None: same)

    @property
    def answers(self) -> tuple[Any, Any]:
        return self.original.answer, self.counterfactual.answer

    def counterfactual_line(self, line: int) -> int:
        """The counterfactual's line holding what the original's `line` holds."""
        return line if self.line_map is None else self.line_map[line]

    def to_dict(self) -> dict[str, Any]:
        record = {"kind": self.kind, "changed_at": self.changed_at, "original": self.original.text,
                  "counterfactual": self.counterfactual.text, "answers": list(map(str, self.answers))}
        return record if self.line_map is None else {**record, "line_map": list(self.line_map)}


def make_counterfactual(program: Program, kind: str, rng) -> CounterfactualPair | None:
    """The pair for `program`, or None when this program admits no such edit.

    The sanity gate: a pair whose answers coincide when the kind should change the answer (or
    differ when it should not), or whose answers are not among the task's pair candidates, is
    dropped (None).
    """
    spec = get_task(program.task)
    declared = spec.counterfactual(kind)
    line_map = None
    if declared.rewrite is not None:
        rewritten = declared.rewrite(program, rng)
        if rewritten is None:
            return None
        text, line_map = rewritten
        if len(text) != len(program.text) or text == program.text:
            raise TaskError(f"the {kind} rewrite must change the text and keep its length (spans and tokens align)")
        at = next(i for i, (a, b) in enumerate(zip(program.text, text)) if a != b)
    else:
        edit = declared.edit(program, rng)
        if edit is None:
            return None
        at, char = edit
        text = replace_char(program.text, at, char)
    counterfactual = spec.reanalyse(program, text)
    counterfactual = dataclasses.replace(counterfactual, seed=program.seed, meta={**counterfactual.meta,
                                                                                  "draw": program.meta.get("draw")})
    if (counterfactual.answer != program.answer) != declared.changes_answer:
        return None
    if spec.pair_candidates and not {str(program.answer), str(counterfactual.answer)} <= set(spec.pair_candidates):
        return None
    return CounterfactualPair(program, counterfactual, kind, at, line_map)


def check_pair_request(task: str, kind: str, options: dict[str, Any]) -> None:
    """Raise TaskError when `task` cannot give `kind` pairs with these draw options."""
    declared = get_task(task).counterfactual(kind)
    if declared.requires is not None:
        declared.requires(options)


def make_pairs(
    kind: str,
    n: int,
    seq_len: int,
    seed: int,
    *,
    task: str = DEFAULT_TASK,
    exclude: frozenset[str] | set[str] = frozenset(),
    keep: Callable[[CounterfactualPair], bool] | None = None,
    **options: Any,
) -> list[CounterfactualPair]:
    """`n` seeded pairs of `task` programs and their counterfactuals, passing `keep` if given.

    Programs that admit no edit of this kind, or fail the sanity gate or `keep`, are skipped and
    further programs drawn, deterministically.
    """
    check_pair_request(task, kind, options)
    pairs: list[CounterfactualPair] = []
    batch = max(n, 8)
    drawn = 0
    while len(pairs) < n:
        if drawn > 50 * n + 500:
            raise TaskError(f"could not find {n} usable {kind} pairs at seq_len={seq_len}; try other options")
        programs = make_programs(task, drawn + batch, seq_len, seed, exclude=exclude, **options)[drawn:]
        for program in programs:
            rng = derive_rng("counterfactual", kind, seed, program.meta["draw"])
            pair = make_counterfactual(program, kind, rng)
            if pair is not None and (keep is None or keep(pair)):
                pairs.append(pair)
                if len(pairs) == n:
                    break
        drawn += batch
    return pairs
