"""A declared causal model of a task: the hypothesis `locate` tests, as plain data.

    model = causal_model("binding")
    model.variables                       # query, pointer<k>, value
    model.variable_of(pair)               # which variable the pair's counterfactual interchanges
    model.predict(pair)                   # the output the hypothesis predicts under that interchange

Binding (after arXiv 2505.20896): the model reads the *query* variable's name, follows the chain
one hop at a time -- at chain line k (k >= 2) it reads the *pointer* variable named on that line's
right-hand side -- and outputs the *value*, the root constant. A counterfactual kind intervenes on
one variable: root_value on the value, query_chain on the query variable, chain_link on the pointer
of the hop it edits; distractor_value on none (a control: the output must not change).

Interchanging variable V takes V's value from the counterfactual program and keeps the rest of
the original; the prediction is what the causal model outputs then, computed here by running the
original program's lines with that one variable replaced (never by reading the counterfactual's
answer). For the single-edit binding kinds it equals the counterfactual's answer; the tests check
that against Python's own execution.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Sequence

from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.program import Program, TaskError

CONTROL = "none"  # the variable of a control counterfactual: none is interchanged


@dataclasses.dataclass(frozen=True)
class CausalVariable:
    """One variable of the hypothesis: its name, what it is, and where a program writes it."""

    name: str
    description: str
    role: str  # the token role holding the variable in the program text (a `Program.spans` key)


@dataclasses.dataclass(frozen=True)
class CausalModel:
    """variables_of(program): the variables of that program (binding: pointers depend on hops).
    interventions: counterfactual kind -> the variable it interchanges (a name, the family
        "pointer" resolved per pair by `pointer_of`, or CONTROL).
    output(program, variable, value): the hypothesis' output for `program` with `variable` set to
        `value` (variable None: no intervention)."""

    task: str
    describe: str
    variables_of: Callable[[Program], list[CausalVariable]]
    interventions: Mapping[str, str]
    output: Callable[[Program, str | None, Any], Any]
    pointer_of: Callable[[CounterfactualPair], str] | None = None

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
        return self.pointer_of(pair) if name == "pointer" and self.pointer_of else name

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

    def table(self, program: Program) -> list[dict[str, str]]:
        """The declaration for one program as rows: variable, role, description, counterfactuals."""
        return [{"variable": v.name, "role": v.role, "description": v.description,
                 "counterfactuals": ", ".join(k for k, name in self.interventions.items()
                                              if name == v.name or (name == "pointer" and _POINTER.match(v.name)))}
                for v in self.variables_of(program)]


# ---------------------------------------------------------------- binding

_POINTER = re.compile(r"^pointer(\d+)$")
_LINE = re.compile(r"^([a-z]) ?= ?([a-z0-9])$")


def _binding_variables(program: Program) -> list[CausalVariable]:
    hops = program.meta["hops"]
    return ([CausalVariable("query", "the queried variable's name", "query_var")]
            + [CausalVariable(f"pointer{k}", f"the variable chain line {k} copies (hop {k} of {hops})", f"chain{k}_rhs")
               for k in range(hops, 1, -1)]
            + [CausalVariable("value", "the root constant carried up the chain", "root_value")])


def _values(lines: Sequence[str]) -> dict[str, int]:
    """Each variable's value after `lines`, by the hypothesis' own walk (no Python execution)."""
    env: dict[str, int] = {}
    for line in lines:
        match = _LINE.match(line)
        if not match:
            raise TaskError(f"not a binding line: {line!r}")
        lhs, rhs = match.groups()
        env[lhs] = int(rhs) if rhs.isdigit() else env[rhs]
    return env


def _binding_output(program: Program, variable: str | None, value: Any) -> Any:
    """The answer with one variable of the chain set to `value`."""
    lines = program.text.split("\n")[:-1]
    if variable is None:
        return _values(lines)[program.query_var]
    if variable == "value":
        return int(value)
    if variable == "query":
        return _values(lines).get(str(value))
    match = _POINTER.match(variable)
    if not match:
        raise TaskError(f"unknown binding variable {variable!r}")
    hop = int(match.group(1))
    if not 2 <= hop <= program.meta["hops"]:
        raise TaskError(f"this program has no pointer at hop {hop}")
    before = _values(lines[: program.meta["chain_lines"][hop - 1]])  # what the pointer can read there
    if str(value) not in before:
        raise TaskError(f"pointer {value!r} names no variable assigned before chain line {hop}")
    return before[str(value)]  # carried unchanged up the rest of the chain


def _chain_link_pointer(pair: CounterfactualPair) -> str:
    for role, (start, _) in pair.original.spans.items():
        match = re.fullmatch(r"chain(\d+)_rhs", role)
        if match and start == pair.changed_at and int(match.group(1)) >= 2:
            return f"pointer{match.group(1)}"
    raise TaskError("a chain_link pair's edit is not on a chain line's right-hand side")


BINDING_CAUSAL_MODEL = CausalModel(
    task="binding",
    describe="read the query's name, follow the pointer at each hop down the chain, output the root value",
    variables_of=_binding_variables,
    interventions={"root_value": "value", "query_chain": "query", "chain_link": "pointer",
                   "distractor_value": CONTROL},
    output=_binding_output,
    pointer_of=_chain_link_pointer,
)

_MODELS: dict[str, CausalModel] = {"binding": BINDING_CAUSAL_MODEL}


def causal_model(task: str) -> CausalModel:
    """The declared causal model of `task`."""
    if task not in _MODELS:
        raise TaskError(f"task {task!r} declares no causal model; tasks with one: {', '.join(sorted(_MODELS))}")
    return _MODELS[task]


def register_causal_model(model: CausalModel) -> None:
    """Declare (or replace) the causal model of `model.task`."""
    _MODELS[model.task] = model


def group_by_variable(model: CausalModel, pairs: Sequence[CounterfactualPair]) -> dict[str, list[CounterfactualPair]]:
    """Pairs by the variable their counterfactual interchanges, in first-seen order."""
    groups: dict[str, list[CounterfactualPair]] = {}
    for pair in pairs:
        groups.setdefault(model.variable_of(pair), []).append(pair)
    return groups
