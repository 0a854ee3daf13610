"""What a task declares, in one place, so analyses read it instead of branching on a task's name.

A task is a `TaskSpec`: how to draw a program, its options, its condition axes, the answers a
scorer compares, and -- for tasks that can be patched and analysed -- its analyser, counterfactual
kinds, the token roles of a role grid in reading order and the hop each role belongs to, its causal
model, its systematic filter, how a programs file's lines are checked, and what training on it
needs. A built-in task is a package `bindexp/tasks/<name>/` whose `spec.py` builds its TaskSpec;
the registry lists each with one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from random import Random
from typing import TYPE_CHECKING, Any

from bindexp.errors import TaskError
from bindexp.tasks.program import Program

if TYPE_CHECKING:
    from bindexp.tasks.causal_model import CausalModel

BOOLEANS = ("True", "False")
# a programs file's task options: option -> (accepted types, how a message names them)
FileOptions = Mapping[str, "tuple[tuple[type, ...], str]"]

# (program, rng) -> (character offset, replacement character), or None when the program admits no such edit
Edit = Callable[[Program, Random], "tuple[int, str] | None"]
# (program, rng) -> (the edited text, of the same length, and the line map: the original's line i is the
# edited text's line map[i]), or None: an edit of several characters or whole lines (swapping lines, renaming)
Rewrite = Callable[[Program, Random], "tuple[str, tuple[int, ...]] | None"]


@dataclasses.dataclass(frozen=True)
class CounterfactualKind:
    """One way to edit a program: which character changes (`edit`) or how the text is rewritten
    (`rewrite`: several characters or whole lines, the length kept), and whether the answer must change.

    A pair whose answers coincide when `changes_answer` (or differ when not) is dropped.
    requires(options): raise TaskError when the draw options cannot give such pairs (checked first).
    edits_value_role: the edit changes the task's `value_role` token (e.g. binding's root_value):
    only then does a summary report where the effect passes from that role to the final token.
    """

    name: str
    edit: Edit | None
    changes_answer: bool
    requires: Callable[[Mapping[str, Any]], None] | None = None
    edits_value_role: bool = False
    rewrite: Rewrite | None = None


def not_heuristic(program: Program) -> bool:
    """The default systematic filter: the line-1/line-2 heuristic does not answer the program."""
    return not program.meta.get("heuristic")


def answer_digit(program: Program) -> int:
    return int(program.answer)


@dataclasses.dataclass(frozen=True)
class TrainingSupport:
    """What training a model from scratch on a task needs beyond its generator.

    pairs: every (variable, constant) a program can assign; a seeded share is held out of training.
    constant_pairs(program): the (variable, constant) pairs its lines assign.
    root_pair(program): the pair whose constant the answer is (the held-out set's criterion).
    line_values(program, final_values): the value each line leaves in its variable.
    extra_queries(program, final_values, n, rng): n further (variable, value) queries.
    relabel(program, rng): the program with its names and constants permuted, analysed anew.
    max_hops: the longest chain the generator draws (the `more_hops` generalisation sets stop there).
    """

    pairs: tuple[tuple[str, str], ...]
    constant_pairs: Callable[[Program], set]
    root_pair: Callable[[Program], tuple[str, str]]
    line_values: Callable[[Program, dict], list]
    extra_queries: Callable[..., list]
    relabel: Callable[[Program, Random], Program]
    max_hops: int


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
    analyse(text, seq_len) -> Program: any program of the task's shape with its roles and facts
        derived from its text (a programs file's lines are read with it).
    hop_of(role) -> the chain hop a role belongs to, or None (the attention run's routing sources).
    systematic(program): whether a systematic_only run keeps the program.
    check_systematic(seq_len, options): raise TaskError when no program can be systematic.
    causal_model: the hypothesis `locate` tests (None: the task declares none).
    hypotheses: competing causal models by name (the `hypotheses` job scores them all on the same
        interventions); the declared `causal_model` among them.
    probe_labels: label name -> (program -> class, number of classes) for the PCA + probe subspace.
    check_file_line(line, program): a programs file line's task-specific facts (TaskError if wrong).
    file_options: the option types a programs file may record (None: the task takes no options).
    training: what training from scratch needs (None: the task cannot be trained on).
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
    analyse: Callable[[str, int | None], Program] | None = None
    hop_of: Callable[[str], int | None] | None = None
    systematic: Callable[[Program], bool] = not_heuristic
    check_systematic: Callable[[int, Mapping[str, Any]], None] | None = None
    causal_model: CausalModel | None = None
    hypotheses: Mapping[str, CausalModel] = dataclasses.field(default_factory=dict)
    probe_labels: Mapping[str, tuple[Callable[[Program], int], int]] = dataclasses.field(
        default_factory=lambda: {"value": (answer_digit, 10)})
    check_file_line: Callable[[Mapping[str, Any], Program], None] | None = None
    file_options: FileOptions | None = None
    training: TrainingSupport | None = None

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
