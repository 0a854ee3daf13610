"""What a task declares, in one place, so analyses read it instead of branching on a task's name.

A task is a `TaskSpec`: how to draw a program, its options, its condition axes, the answers a
scorer compares, and -- for tasks that can be patched -- its counterfactual kinds and the token
roles of a role grid in reading order.
"""

from __future__ import annotations

import dataclasses
from random import Random
from typing import Any, Callable, Mapping, Sequence

from bindexp.tasks.program import Program, TaskError

from bindexp.vocab import DIGITS  # noqa: E402 - one definition, torch-free
BOOLEANS = ("True", "False")

# (program, rng) -> (character offset, replacement character), or None when the program admits no such edit
Edit = Callable[[Program, Random], "tuple[int, str] | None"]


@dataclasses.dataclass(frozen=True)
class CounterfactualKind:
    """One way to edit a program: which character changes, and whether the answer must change.

    A pair whose answers coincide when `changes_answer` (or differ when not) is dropped.
    requires(options): raise TaskError when the draw options cannot give such pairs (checked first).
    edits_value_role: the edit changes the task's `value_role` token (e.g. binding's root_value):
    only then does a summary report where the effect passes from that role to the final token.
    """

    name: str
    edit: Edit
    changes_answer: bool
    requires: Callable[[Mapping[str, Any]], None] | None = None
    edits_value_role: bool = False


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A named task.

    generate(length, rng[, options]) -> Program.
    candidates: the answers a scorer compares at the final position (e.g. the ten digits), or
        None when answers are open-ended and must be generated and parsed.
    options: the dataclass of options the task accepts (None: it takes none); a `check(seq_len)`
        method on it rejects impossible requests before anything is drawn.
    axes: the condition axes a run crosses (each an option or `seq_len`).
    counterfactuals: the edits that make patching pairs (empty: the task cannot be patched).
    reanalyse(program, edited_text) -> Program: the counterfactual program after an edit.
    pair_candidates: the answers a patched pair is scored among (a pair whose answers are not
        among them is dropped before any model runs).
    role_columns(programs) -> the token roles of a role grid over these programs, in reading order.
    value_role: the role holding the value the answer is read from (the summary reports where the
        effect passes from it to the final token).
    """

    name: str
    generate: Callable[..., Program]
    candidates: tuple[str, ...] | None = None
    answer_type: type = int
    options: type | None = None
    axes: tuple[str, ...] = ("seq_len",)
    counterfactuals: Mapping[str, CounterfactualKind] = dataclasses.field(default_factory=dict)
    reanalyse: Callable[[Program, str], Program] | None = None
    pair_candidates: tuple[str, ...] | None = None
    role_columns: Callable[[Sequence[Program]], list[str]] | None = None
    value_role: str | None = None

    def make_options(self, **options: Any) -> Any:
        if self.options is None:
            if options:
                raise TaskError(f"task {self.name!r} takes no options, got {sorted(options)}")
            return None
        known = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TaskError(f"task {self.name!r} has no option {unknown[0]!r}; it takes {sorted(known)}")
        return self.options(**options)

    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)] if self.options is not None else []

    def counterfactual(self, kind: str) -> CounterfactualKind:
        if not self.counterfactuals:
            raise TaskError(f"task {self.name!r} declares no counterfactuals, so it cannot be patched")
        if kind not in self.counterfactuals:
            raise TaskError(f"unknown counterfactual {kind!r}; known: {', '.join(self.counterfactuals)}")
        return self.counterfactuals[kind]
