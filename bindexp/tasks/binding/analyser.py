"""Any binding program (generated or hand-written) analysed by Python's semantics: its chain, the
token roles (spans) of its lines, and the facts (meta) a run splits by; the roles of a role grid
and the hop each role belongs to; the systematic filter's precondition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bindexp.errors import TaskError
from bindexp.tasks.program import Program, Span, execute_query

LINE = re.compile(r"^([a-z]) ?= ?([a-z0-9])$")
_QUERY = re.compile(r"^#([a-z]): $")


def analyse_binding(text: str, *, seq_len: int | None = None) -> Program:
    """Parse any binding program and derive its chain, spans and labels by Python's semantics.

    Works for generated and hand-written programs alike (one line per assignment, query last).
    """
    *body, query = text.split("\n")
    match = _QUERY.match(query)
    if not match:
        raise TaskError(f"a binding program must end with a query line like '#a: ', got {query!r}")
    query_var = match.group(1)
    parsed = []
    for number, line in enumerate(body, 1):
        m = LINE.match(line)
        if not m:
            raise TaskError(f"line {number} is not a binding line ('a = 3' or 'a = b'): {line!r}")
        parsed.append(m.groups())

    # parent[i]: the line whose value line i copies (None for constants), by sequential semantics.
    last_def: dict[str, int] = {}
    parent: list[int | None] = []
    for i, (lhs, rhs) in enumerate(parsed):
        if rhs.isdigit():
            parent.append(None)
        elif rhs in last_def:
            parent.append(last_def[rhs])
        else:
            raise TaskError(f"line {i + 1} reads {rhs!r} before it is assigned")
        last_def[lhs] = i
    if query_var not in last_def:
        raise TaskError(f"the query variable {query_var!r} is never assigned")

    chain = [last_def[query_var]]
    while parent[chain[-1]] is not None:
        chain.append(parent[chain[-1]])
    chain.reverse()  # root first

    starts = [0]
    for line in body:
        starts.append(starts[-1] + len(line) + 1)
    spans: dict[str, Span] = {}
    for depth, i in enumerate(chain, 1):
        lhs_at, rhs_at = starts[i], starts[i] + len(body[i]) - 1
        spans[f"chain{depth}_lhs"] = (lhs_at, lhs_at + 1)
        spans[f"chain{depth}_rhs"] = (rhs_at, rhs_at + 1)
        spans[f"chain{depth}_end"] = (rhs_at + 1, rhs_at + 2)  # the newline ending the line
    spans["root_value"] = spans["chain1_rhs"]
    distractor_roots = [i for i, p in enumerate(parent) if p is None and i != chain[0]]
    for j, i in enumerate(distractor_roots, 1):
        rhs_at = starts[i] + len(body[i]) - 1
        spans[f"distractor{j}_value"] = (rhs_at, rhs_at + 1)
    spans["query_var"] = (starts[-1] + 1, starts[-1] + 2)
    spans["final"] = (len(text) - 1, len(text))

    answer = execute_query(text, query_var)
    constants = [int(rhs) if rhs.isdigit() else None for _, rhs in parsed[:2]] + [None, None]
    line1_value, line2_value = constants[0], constants[1]
    return Program(
        task="binding",
        text=text,
        answer=answer,
        query_var=query_var,
        seq_len=len(body) if seq_len is None else seq_len,
        spans=spans,
        meta={
            "hops": len(chain),
            "chain_lines": chain,
            "distractor_lines": [i for i in range(len(body)) if i not in chain],
            "distractor_depths": sorted(_tree_depths(parent, distractor_roots)),
            "rebound_lines": _rebound_lines(parsed),
            "line1_value": line1_value,
            "line2_value": line2_value,
            "heuristic_line1": line1_value == answer,
            "heuristic_line2": line2_value == answer,
            "heuristic": answer in (line1_value, line2_value),
        },
    )


def _tree_depths(parent: list[int | None], roots: list[int]) -> list[int]:
    depth = [0] * len(parent)
    for i, p in enumerate(parent):  # parents always come before children
        depth[i] = 1 if p is None else depth[p] + 1
    root_of = list(range(len(parent)))
    for i, p in enumerate(parent):
        if p is not None:
            root_of[i] = root_of[p]
    return [max(depth[i] for i in range(len(parent)) if root_of[i] == r) for r in roots]


def _rebound_lines(parsed: list[tuple[str, str]]) -> list[int]:
    seen: set[str] = set()
    rebound = []
    for i, (lhs, _) in enumerate(parsed):
        if lhs in seen:
            rebound.append(i)
        seen.add(lhs)
    return rebound


def role_columns(hops: int) -> list[str]:
    """Role-grid columns in reading order: the chain line by line (its variable, what it reads, the
    newline ending it), a distractor constant, the query."""
    columns = ["chain1_lhs", "root_value", "chain1_end"]
    for depth in range(2, hops + 1):
        columns += [f"chain{depth}_lhs", f"chain{depth}_rhs", f"chain{depth}_end"]
    return columns + ["distractor1_value", "query_var", "final"]


def binding_roles(programs: Sequence[Program]) -> list[str]:
    """The role columns that cover every program (the longest chain among them)."""
    return role_columns(max(program.meta["hops"] for program in programs))


def reanalyse_binding(program: Program, text: str) -> Program:
    """The program after an edit, re-derived by Python's semantics (same seq_len)."""
    return analyse_binding(text, seq_len=program.seq_len)


def hop_of(role: str) -> int | None:
    """The chain hop a role belongs to: root_value and chain1_* -> 1, chain<k>_* -> k."""
    if role == "root_value":
        return 1
    match = re.fullmatch(r"chain(\d+)_(lhs|rhs|end)", role)
    return int(match.group(1)) if match else None


def check_systematic(seq_len: int, options: Mapping[str, Any]) -> None:
    """Refuse a systematic_only request no program can satisfy (the line-1/line-2 heuristic always
    answers right when the chain's constant must sit on line 1 or 2)."""
    hops = options.get("hops")
    if hops is not None and seq_len - hops + 1 <= 2:
        # the root constant comes before the chain's other hops - 1 lines, so it sits on line 1 or 2
        raise TaskError(f"systematic_only=True keeps no program at seq_len={seq_len}, hops={hops}: the chain's "
                        "constant is always on line 1 or 2, so the line-1/line-2 heuristic always answers right; "
                        "use seq_len >= hops + 2")
