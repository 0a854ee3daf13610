"""Competing causal models of binding, as plain data: each reads a program its own way, names its
variables and the token roles where it lets each be carried, and predicts the output when one
variable takes its value from a counterfactual program (read by the same hypothesis). `interventions` says which variable each
counterfactual kind targets in a hypothesis's reading (`predict_kind`): pointer-following's
prediction for every kind is the counterfactual's real answer; the others' differ where their
reading does (positional under swap_lines, direct lookup under move_root).

- pointer_following (`causal_model.CAUSAL_MODEL`, the one `locate` tests): the query's name,
  the pointer at each chain line, the value carried hop by hop along the chain to the final token;
  as a competitor also the name each chain line assigns (`name<k>`, at its left-hand side), which
  the next pointer, or the query, looks up -- as in direct lookup and positional (where the query
  does not look up its own line's name: it finds the line by index).
- direct_lookup: the query's name is resolved through the pointers to the *address* of the chain's
  constant (the root variable, `root`, held at the query variable and the final token), whose
  constant is read straight into the final token: the value never sits on the chain's later lines.
- positional: like pointer-following, but the query finds its line by *line index*
  (`query_line`), not by name.
- heuristic: the line-1/line-2 heuristic: the answer is one of the constants on lines 1 and 2
  (a set of two acceptable answers), whatever the query.

Each hypothesis's predictions are computed by its own walk over the program (never from the
counterfactual's answer); the tests check every one against Python's execution of the program
that hypothesis's reading describes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from bindexp.errors import TaskError
from bindexp.tasks.binding.causal_model import (
    CAUSAL_MODEL,
    QUERY_SITES,
    carried_value_sites,
    chain_output,
    name_variables,
    pointer_variables,
    read_counterfactual,
    renamed_lines,
    rhs_of,
    walk_values,
)
from bindexp.tasks.causal_model import ANY_SITE, CONTROL, FAMILY, CausalModel, CausalVariable
from bindexp.tasks.program import Program

if TYPE_CHECKING:
    from bindexp.tasks.counterfactuals import CounterfactualPair


def _lines(program: Program) -> list[str]:
    return program.text.split("\n")[:-1]


def _assigning_line(program: Program, name: str) -> int:
    """The last line assigning `name` (by reading the text)."""
    found = [i for i, line in enumerate(_lines(program)) if line.startswith(name) and not line[1].isalpha()]
    if not found:
        raise TaskError(f"no line assigns {name!r}")
    return found[-1]


# ---------------------------------------------------------------- direct lookup


def _direct_variables(program: Program) -> list[CausalVariable]:
    return ([CausalVariable("query", "the queried variable's name", "query_var", sites=QUERY_SITES)]
            + pointer_variables(program) + name_variables(program)
            + [CausalVariable("root", "the address of the chain's constant (its variable), resolved at the query",
                              "chain1_lhs", sites=QUERY_SITES),
               CausalVariable("value", "the chain's constant, read directly into the final token", "root_value",
                              sites=("root_value", "chain1_end", "final"))])


def _direct_output(program: Program, variable: str | None, value: Any) -> Any:
    if variable != "root":
        return chain_output(program, variable, value)
    constant = rhs_of(program, _assigning_line(program, str(value)))
    if not constant.isdigit():
        raise TaskError(f"{value!r} is not assigned a constant: no address of a constant")
    return int(constant)


def _direct_read(pair: CounterfactualPair, variable: str, role: str | None = None) -> Any:
    if variable == "root":
        return pair.counterfactual.span_text("chain1_lhs")
    return read_counterfactual(pair, variable, role)


DIRECT_LOOKUP = CausalModel(
    task="binding", name="direct_lookup",
    describe="resolve the query's name through the pointers to the address of the chain's constant, read that "
             "constant directly into the final token",
    variables_of=_direct_variables,
    interventions={"root_value": "value", "query_chain": "query", "chain_link": FAMILY, "distractor_value": CONTROL,
                   "swap_lines": CONTROL, "move_root": "root", "rename_variable": CONTROL},
    output=_direct_output, pointer_of=CAUSAL_MODEL.pointer_of, value_of=_direct_read)


# ---------------------------------------------------------------- positional


def _positional_variables(program: Program) -> list[CausalVariable]:
    return ([CausalVariable("query_line", "the index of the line assigning the queried variable", "query_var",
                            sites=QUERY_SITES)]
            + pointer_variables(program) + name_variables(program)
            + [CausalVariable("value", "the root constant carried up the chain", "root_value",
                              sites=carried_value_sites(program))])


def _positional_output(program: Program, variable: str | None, value: Any) -> Any:
    if variable == f"name{program.meta['hops']}":  # the query finds its line by index: its name does not matter
        line = program.meta["chain_lines"][-1]
        return walk_values(renamed_lines(program, program.meta["hops"], value)[: line + 1])[str(value)]
    if variable != "query_line":
        return chain_output(program, variable, value)
    line = int(value)
    lines = _lines(program)
    if not 0 <= line < len(lines):
        raise TaskError(f"no line {line}")
    return walk_values(lines[: line + 1])[lines[line][0]]


def _positional_read(pair: CounterfactualPair, variable: str, role: str | None = None) -> Any:
    if variable == "query_line":
        return _assigning_line(pair.counterfactual, pair.counterfactual.query_var)
    return read_counterfactual(pair, variable, role)


POSITIONAL = CausalModel(
    task="binding", name="positional",
    describe="find the queried variable's line by its index (not its name), the value carried up the chain as in "
             "pointer-following",
    variables_of=_positional_variables,
    interventions={"root_value": "value", "query_chain": "query_line", "chain_link": FAMILY,
                   "distractor_value": CONTROL, "swap_lines": "query_line", "move_root": "value",
                   "rename_variable": CONTROL},
    output=_positional_output, pointer_of=CAUSAL_MODEL.pointer_of, value_of=_positional_read)


# ---------------------------------------------------------------- the line-1/line-2 heuristic


def _heuristic_variables(program: Program) -> list[CausalVariable]:
    return [CausalVariable("lines12", "the right-hand sides of lines 1 and 2 (read at the final token, or anywhere)",
                           "final", sites=(ANY_SITE,))]


def _constants(first: str, second: str) -> frozenset[int]:
    return frozenset(int(rhs) for rhs in (first, second) if rhs.isdigit())


def _heuristic_output(program: Program, variable: str | None, value: Any) -> Any:
    if variable is None:
        value = tuple(rhs_of(program, line) for line in range(min(2, len(_lines(program)))))
    elif variable != "lines12":
        raise TaskError(f"the heuristic has no variable {variable!r}")
    answers = _constants(*value, *([""] * (2 - len(value))))
    return answers or None


def _heuristic_read(pair: CounterfactualPair, variable: str, role: str | None = None) -> Any:
    program = pair.counterfactual
    return tuple(rhs_of(program, line) for line in range(min(2, len(_lines(program)))))


HEURISTIC = CausalModel(
    task="binding", name="heuristic",
    describe="answer with a constant on line 1 or line 2, whatever the query (either is a hit)",
    variables_of=_heuristic_variables, interventions={kind: "lines12" for kind in (
        "root_value", "query_chain", "chain_link", "distractor_value", "swap_lines", "move_root", "rename_variable")},
    output=_heuristic_output, value_of=_heuristic_read)


# pointer-following as a competitor: locate's model, with the kinds that only the competition uses named
# (a moved root keeps the carried value; swapped lines and a consistent renaming change nothing it reads)
def _pointer_variables_and_names(program: Program) -> list[CausalVariable]:
    return [*CAUSAL_MODEL.variables_of(program), *name_variables(program)]


POINTER_FOLLOWING = dataclasses.replace(CAUSAL_MODEL, variables_of=_pointer_variables_and_names, interventions={
    **CAUSAL_MODEL.interventions, "swap_lines": CONTROL, "move_root": "value", "rename_variable": CONTROL})

HYPOTHESES: dict[str, CausalModel] = {model.name: model for model in (POINTER_FOLLOWING, DIRECT_LOOKUP, POSITIONAL,
                                                                      HEURISTIC)}
