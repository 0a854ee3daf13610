"""The causal model of binding (after arXiv 2505.20896), the hypothesis `locate` tests.

The model reads the *query* variable's name, follows the chain one hop at a time -- at chain line
k (k >= 2) it reads the *pointer* variable named on that line's right-hand side -- and outputs the
*value*, the root constant. A counterfactual kind intervenes on one variable: root_value on the
value, query_chain on the query variable, chain_link on the pointer of the hop it edits;
distractor_value on none (a control: the output must not change). For these single-edit kinds the
prediction equals the counterfactual's answer; the tests check that against Python's own execution.

As one of the competing hypotheses (`pointer_following`, `bindexp.tasks.binding.hypotheses`) its
variables may be carried at these sites: the query's name at the query variable and the final
token, each pointer on its line, and the value -- carried hop by hop -- at the root constant and
every token of the chain's later lines, and the final token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bindexp.errors import TaskError
from bindexp.tasks.binding.analyser import LINE
from bindexp.tasks.causal_model import CONTROL, FAMILY, CausalModel, CausalVariable
from bindexp.tasks.program import Program

if TYPE_CHECKING:
    from bindexp.tasks.counterfactuals import CounterfactualPair

_POINTER = re.compile(r"^pointer(\d+)$")
_NAME = re.compile(r"^name(\d+)$")


QUERY_SITES = ("query_var", "final")


def pointer_variables(program: Program) -> list[CausalVariable]:
    """The pointer read at each chain line k >= 2 (carried to the line's end), query end first."""
    hops = program.meta["hops"]
    return [CausalVariable(f"pointer{k}", f"the variable chain line {k} copies (hop {k} of {hops})", f"chain{k}_rhs",
                           family=FAMILY, sites=(f"chain{k}_rhs", f"chain{k}_end")) for k in range(hops, 1, -1)]


def name_variables(program: Program) -> list[CausalVariable]:
    """The name each chain line k assigns (its left-hand side: what the next line's pointer, or the
    query, looks up), held at that token (the competing hypotheses' variables; locate's model has none)."""
    hops = program.meta["hops"]
    return [CausalVariable(f"name{k}", f"the name chain line {k} assigns (hop {k} of {hops})", f"chain{k}_lhs",
                           sites=(f"chain{k}_lhs",)) for k in range(hops, 0, -1)]


def renamed_lines(program: Program, hop: int, name: Any) -> list[str]:
    """The program's assignment lines with chain line `hop` assigning `name` instead."""
    lines = program.text.split("\n")[:-1]
    line = program.meta["chain_lines"][hop - 1]
    lines[line] = str(name) + lines[line][1:]
    return lines


def carried_value_sites(program: Program) -> tuple[str, ...]:
    """Where a value carried hop by hop may sit: the root constant, the end of its line, every token
    of the chain's later lines, and the final token."""
    later = [f"chain{k}_{part}" for k in range(2, program.meta["hops"] + 1) for part in ("lhs", "rhs", "end")]
    return ("root_value", "chain1_end", *later, "final")


def _variables(program: Program) -> list[CausalVariable]:
    return ([CausalVariable("query", "the queried variable's name", "query_var", sites=QUERY_SITES)]
            + pointer_variables(program)
            + [CausalVariable("value", "the root constant carried up the chain", "root_value",
                              sites=carried_value_sites(program))])


def rhs_of(program: Program, line: int) -> str:
    """The right-hand side (a letter or a digit) of assignment line `line`."""
    match = LINE.match(program.text.split("\n")[line])
    if not match:
        raise TaskError(f"line {line + 1} is not a binding line")
    return match.group(2)


def line_of_role(program: Program, role: str | None) -> int | None:
    """The program line a line-bound role sits on (root_value and chain<k>_lhs/rhs/end: chain line
    k), or None (the query variable, the final token, no role)."""
    match = re.fullmatch(r"chain(\d+)_(lhs|rhs|end)", role or "")
    hop = 1 if role == "root_value" else int(match.group(1)) if match else None
    return program.meta["chain_lines"][hop - 1] if hop is not None and hop <= program.meta["hops"] else None


def read_counterfactual(pair: CounterfactualPair, variable: str, role: str | None = None) -> Any:
    """Pointer-following's reading of a variable in the counterfactual, as carried at `role`.

    At a line-bound role (a patched cell on one of the original's chain lines) the variable is read
    from the counterfactual's line at the *same index*, which is what that cell's activation comes
    from: its pointer, its name, or the value that line holds. Elsewhere (the query variable, the final token,
    or no role: the whole counterfactual) the counterfactual is read as a program: its query's name,
    the pointer on the line that holds the original's chain line k (lines may have moved: the
    pair's line map), its root constant."""
    counterfactual, line = pair.counterfactual, line_of_role(pair.original, role)
    if variable == "query":
        return counterfactual.query_var
    if variable == "value":
        if line is None:
            return int(counterfactual.span_text("root_value"))
        lines = counterfactual.text.split("\n")
        return walk_values(lines[: line + 1])[lines[line][0]]
    match = _POINTER.match(variable) or _NAME.match(variable)
    if not match:
        raise TaskError(f"unknown binding variable {variable!r}")
    if line is None:
        line = pair.counterfactual_line(pair.original.meta["chain_lines"][int(match.group(1)) - 1])
    return rhs_of(counterfactual, line) if variable.startswith("pointer") else counterfactual.text.split("\n")[line][0]


def walk_values(lines: Sequence[str]) -> dict[str, int]:
    """Each variable's value after `lines`, by the hypothesis' own walk (no Python execution)."""
    env: dict[str, int] = {}
    for line in lines:
        match = LINE.match(line)
        if not match:
            raise TaskError(f"not a binding line: {line!r}")
        lhs, rhs = match.groups()
        if not rhs.isdigit() and rhs not in env:
            raise TaskError(f"{rhs!r} is read before any line assigns it")
        env[lhs] = int(rhs) if rhs.isdigit() else env[rhs]
    return env


def chain_output(program: Program, variable: str | None, value: Any) -> Any:
    """The answer with one variable of the chain set to `value`."""
    lines = program.text.split("\n")[:-1]
    if variable is None:
        return walk_values(lines)[program.query_var]
    if variable == "value":
        return int(value)
    if variable == "query":
        return walk_values(lines).get(str(value))
    named = _NAME.match(variable)
    if named and 1 <= int(named.group(1)) <= program.meta["hops"]:  # the query finds its variable by name, or not
        values = walk_values(renamed_lines(program, int(named.group(1)), value))
        if program.query_var not in values:
            raise TaskError(f"no line assigns the query's variable {program.query_var!r} any more")
        return values[program.query_var]
    match = _POINTER.match(variable)
    if not match:
        raise TaskError(f"unknown binding variable {variable!r}")
    hop = int(match.group(1))
    if not 2 <= hop <= program.meta["hops"]:
        raise TaskError(f"this program has no pointer at hop {hop}")
    before = walk_values(lines[: program.meta["chain_lines"][hop - 1]])  # what the pointer can read there
    if str(value) not in before:
        raise TaskError(f"pointer {value!r} names no variable assigned before chain line {hop}")
    return before[str(value)]  # carried unchanged up the rest of the chain


def _chain_link_pointer(pair: CounterfactualPair) -> str:
    for role, (start, _) in pair.original.spans.items():
        match = re.fullmatch(r"chain(\d+)_rhs", role)
        if match and start == pair.changed_at and int(match.group(1)) >= 2:
            return f"pointer{match.group(1)}"
    raise TaskError("a chain_link pair's edit is not on a chain line's right-hand side")


CAUSAL_MODEL = CausalModel(
    task="binding",
    describe="read the query's name, follow the pointer at each hop down the chain, output the root value",
    variables_of=_variables,
    interventions={"root_value": "value", "query_chain": "query", "chain_link": FAMILY,
                   "distractor_value": CONTROL},
    output=chain_output,
    pointer_of=_chain_link_pointer,
    name="pointer_following",
    value_of=read_counterfactual,
)
