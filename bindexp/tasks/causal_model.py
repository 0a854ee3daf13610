"""A declared causal model of a task: the hypothesis `locate` tests, and the competing ones the
`hypotheses` job scores on the same interventions, as plain data.

    model = causal_model(task)
    model.variables_of(program)           # the hypothesis' variables for this program
    model.variable_of(pair)               # which variable the pair's counterfactual interchanges
    model.predict(pair)                   # the output the hypothesis predicts under that interchange
    hypotheses(task)                      # name -> CausalModel: the competing hypotheses
    model.predict_variable(pair, name)    # the output with `name` interchanged, by this model's reading
    model.carriers(program, role)         # the variables this model lets a token role carry

A task declares its causal model on its `TaskSpec` (`causal_model=`); a counterfactual kind
intervenes on one variable (or on none: a control, whose output must not change).

Interchanging variable V takes V's value from the counterfactual program and keeps the rest of
the original; the prediction is what the causal model outputs then, computed by the task's own
walk over the original program with that one variable replaced (never by reading the
counterfactual's answer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bindexp.errors import TaskError
from bindexp.tasks.program import Program

if TYPE_CHECKING:
    from bindexp.tasks.counterfactuals import CounterfactualPair

CONTROL = "none"  # the variable of a control counterfactual: none is interchanged
FAMILY = "pointer"  # an intervention naming a family of variables, resolved per pair by `pointer_of`


@dataclasses.dataclass(frozen=True)
class CausalVariable:
    """One variable of the hypothesis: its name, what it is, and where a program writes it."""

    name: str
    description: str
    role: str  # the token role holding the variable in the program text (a `Program.spans` key)
    family: str | None = None  # the family an intervention may name instead (e.g. pointer)
    sites: tuple[str, ...] = ()  # the token roles where the hypothesis lets it be carried (ANY_SITE: every role)


ANY_SITE = "*"


@dataclasses.dataclass(frozen=True)
class CausalModel:
    """variables_of(program): the variables of that program (they may depend on it).
    interventions: counterfactual kind -> the variable it interchanges (a name, a family resolved
        per pair by `pointer_of`, or CONTROL).
    output(program, variable, value): the hypothesis' output for `program` with `variable` set to
        `value` (variable None: no intervention); TaskError when the value means nothing there.
    value_of(pair, variable, role): the variable's value in the pair's counterfactual, by this
        hypothesis' own reading of that program, as carried at the token `role` (None: the
        counterfactual as a whole); None here: the text at the original's span of the variable's
        role, what single-character edits need."""

    task: str
    describe: str
    variables_of: Callable[[Program], list[CausalVariable]]
    interventions: Mapping[str, str]
    output: Callable[[Program, str | None, Any], Any]
    pointer_of: Callable[[CounterfactualPair], str] | None = None
    name: str = "declared"
    value_of: Callable[[CounterfactualPair, str, str | None], Any] | None = None

    def variable(self, program: Program, name: str) -> CausalVariable:
        for variable in self.variables_of(program):
            if variable.name == name:
                return variable
        raise TaskError(f"the {self.task} causal model has no variable {name!r} for this program")

    def variable_of(self, pair: CounterfactualPair) -> str:
        """The variable the pair's counterfactual intervenes on (CONTROL for a control kind)."""
        if pair.kind not in self.interventions:
            raise TaskError(f"the {self.task} causal model maps no variable to counterfactual {pair.kind!r}; "
                            f"it maps {', '.join(self.interventions)}")
        name = self.interventions[pair.kind]
        return self.pointer_of(pair) if name == FAMILY and self.pointer_of else name

    def interchanged_value(self, pair: CounterfactualPair, name: str) -> str:
        """The variable's value in the counterfactual: its text at the original's span of the
        variable's role (edits keep every character where it was)."""
        start, end = pair.original.spans[self.variable(pair.original, name).role]
        return pair.counterfactual.text[start:end]

    def predict(self, pair: CounterfactualPair) -> Any:
        """The output under interchange of the pair's variable (from the counterfactual into the
        original); the original output for a control."""
        name = self.variable_of(pair)
        if name == CONTROL:
            return self.output(pair.original, None, None)
        return self.output(pair.original, name, self.interchanged_value(pair, name))

    def predict_variable(self, pair: CounterfactualPair, name: str, role: str | None = None) -> Any:
        """The output with variable `name` interchanged: its value read from the counterfactual (by
        `value_of`, as carried at `role`: a patched cell's token) put into the original; None when
        that value means nothing in the original (e.g. a name no line assigns there)."""
        try:
            value = self.value_of(pair, name, role) if self.value_of else self.interchanged_value(pair, name)
            return self.output(pair.original, name, value)
        except TaskError:
            return None

    def predict_kind(self, pair: CounterfactualPair) -> Any:
        """The output under the interchange the pair's kind targets in this hypothesis's reading
        (`interventions`; a kind it does not name changes none of its variables: its clean output)."""
        name = self.interventions.get(pair.kind, CONTROL)
        if name == FAMILY and self.pointer_of:
            name = self.pointer_of(pair)
        return self.output(pair.original, None, None) if name == CONTROL else self.predict_variable(pair, name)

    def carriers(self, program: Program, role: str) -> list[str]:
        """The variables this hypothesis lets `role`'s token carry (its own role, or one of its sites)."""
        return [v.name for v in self.variables_of(program) if role == v.role or role in v.sites or ANY_SITE in v.sites]

    def table(self, program: Program) -> list[dict[str, str]]:
        """The declaration for one program as rows: variable, role, description, counterfactuals."""
        return [{"variable": v.name, "role": v.role, "description": v.description,
                 "counterfactuals": ", ".join(k for k, name in self.interventions.items()
                                              if name == v.name or (name == FAMILY and v.family == FAMILY)),
                 **({"sites": ", ".join(v.sites)} if v.sites else {})}
                for v in self.variables_of(program)]


def causal_model(task: str) -> CausalModel:
    """The declared causal model of `task`."""
    from bindexp.tasks.registry import get_task, task_names

    model = get_task(task).causal_model
    if model is None:
        declared = [name for name in task_names() if get_task(name).causal_model is not None]
        raise TaskError(f"task {task!r} declares no causal model; tasks with one: {', '.join(declared)}")
    return model


def hypotheses(task: str) -> dict[str, CausalModel]:
    """The competing causal models `task` declares, by name."""
    from bindexp.tasks.registry import get_task, task_names

    declared = dict(get_task(task).hypotheses)
    if not declared:
        having = [name for name in task_names() if get_task(name).hypotheses]
        raise TaskError(f"task {task!r} declares no competing hypotheses; tasks with some: {', '.join(having)}")
    return declared


def group_by_variable(model: CausalModel, pairs: Sequence[CounterfactualPair]) -> dict[str, list[CounterfactualPair]]:
    """Pairs by the variable their counterfactual interchanges, in first-seen order."""
    groups: dict[str, list[CounterfactualPair]] = {}
    for pair in pairs:
        groups.setdefault(model.variable_of(pair), []).append(pair)
    return groups
