"""Variable-binding programs (after arXiv 2505.20896): chains of assignments and a query.

    k = 2
    j = k
    t = 8
    #j:

Definitions used throughout bindexp:
- A *binding line* assigns a single-letter variable either a digit (`k = 2`, a *constant*) or
  another variable (`j = k`, a *copy*).
- The *chain* of a query `#q: ` is found with Python's sequential semantics: start at the last
  assignment to `q` before the query; while its right-hand side is a variable, step to the last
  assignment of that variable before the current line. The chain ends at a constant, the *root*.
- *hops* is the number of assignments on the chain, root included. `a = 4 ... #a: ` is 1 hop;
  `a = 4 ... b = a ... #b: ` is 2 hops.
- *Distractor* lines are all lines not on the chain. A *distractor chain* is a tree of lines that
  grows from a constant other than the root; its *depth* is the number of lines on its longest
  path. Generated distractor chains are simple paths.
- *Rebinding*: a variable assigned again later. Generated programs only rebind a variable whose
  previous value nobody reads any more, so the chain is always what the generator built;
  `analyse_binding` follows Python's semantics for any program.
"""

from __future__ import annotations

import dataclasses
import re
import string
from random import Random
from typing import Literal, Sequence

from bindexp.tasks.program import Program, Span, TaskError, execute_query, run_program

LETTERS = string.ascii_lowercase
MAX_HOPS = 4
Spacing = Literal["spaced", "compact"]

_LINE = re.compile(r"^([a-z]) ?= ?([a-z0-9])$")
_QUERY = re.compile(r"^#([a-z]): $")


@dataclasses.dataclass(frozen=True)
class BindingOptions:
    """How a binding program is drawn.

    hops: assignments followed from the query to the constant (1-4, see module docstring).
    distractor_chains: number of distractor chains; None splits the remaining lines into chains
        of random depth 1..max_distractor_depth.
    max_distractor_depth: the deepest distractor chain (lines on it).
    rebinding: allow assigning a variable again once its old value is no longer read.
    rebinding_prob: with rebinding, the chance that a line reuses such a variable.
    spacing: "spaced" (`a = 3`) or "compact" (`a=3`).
    """

    hops: int = 1
    distractor_chains: int | None = None
    max_distractor_depth: int = 3
    rebinding: bool = False
    rebinding_prob: float = 0.5
    spacing: Spacing = "spaced"

    def check(self, seq_len: int) -> None:
        """Raise TaskError, with a one-line reason, if no program can satisfy these options."""
        if not 1 <= self.hops <= MAX_HOPS:
            raise TaskError(f"hops must be between 1 and {MAX_HOPS}, got {self.hops}")
        if seq_len < 1:
            raise TaskError(f"seq_len must be at least 1, got {seq_len}")
        if self.hops > seq_len:
            raise TaskError(f"hops ({self.hops}) cannot exceed seq_len ({seq_len})")
        if self.max_distractor_depth < 1:
            raise TaskError(f"max_distractor_depth must be at least 1, got {self.max_distractor_depth}")
        if self.spacing not in ("spaced", "compact"):
            raise TaskError(f"spacing must be 'spaced' or 'compact', got {self.spacing!r}")
        if not 0.0 <= self.rebinding_prob <= 1.0:
            raise TaskError(f"rebinding_prob must be in [0, 1], got {self.rebinding_prob}")
        if not self.rebinding and seq_len > len(LETTERS):
            raise TaskError(
                f"seq_len {seq_len} needs {seq_len} distinct variables but there are only "
                f"{len(LETTERS)} letters; use fewer lines or rebinding=True"
            )
        spare = seq_len - self.hops
        chains = self.distractor_chains
        if chains is None:
            return
        if chains < 0:
            raise TaskError(f"distractor_chains must be >= 0, got {chains}")
        if not chains <= spare <= chains * self.max_distractor_depth:
            raise TaskError(
                f"{chains} distractor chains of depth 1..{self.max_distractor_depth} cannot fill "
                f"the {spare} lines left by seq_len={seq_len}, hops={self.hops}"
            )


def binding_program(seq_len: int, rng: Random, options: BindingOptions) -> Program:
    """Draw one binding program of `seq_len` assignment lines plus the query line."""
    options.check(seq_len)
    depths = [options.hops] + _distractor_depths(seq_len - options.hops, rng, options)
    order = [chain for chain, depth in enumerate(depths) for _ in range(depth)]
    rng.shuffle(order)
    lines, query_var = _assign_names(order, depths, rng, options)
    text = render_binding(lines, query_var, options.spacing)
    program = analyse_binding(text)
    # The generator's own bookkeeping must agree with Python's semantics.
    if program.meta["hops"] != options.hops or program.meta["distractor_depths"] != sorted(depths[1:]):
        raise RuntimeError(f"generated program does not match its request:\n{text}")
    return program


def _distractor_depths(spare: int, rng: Random, options: BindingOptions) -> list[int]:
    cap = options.max_distractor_depth
    if options.distractor_chains is None:
        depths = []
        while spare > 0:
            depths.append(rng.randint(1, min(cap, spare)))
            spare -= depths[-1]
        return depths
    depths = [1] * options.distractor_chains
    for _ in range(spare - len(depths)):
        open_chains = [i for i, d in enumerate(depths) if d < cap]
        depths[rng.choice(open_chains)] += 1
    return depths


def _assign_names(
    order: list[int], depths: list[int], rng: Random, options: BindingOptions
) -> tuple[list[tuple[str, str]], str]:
    """Give each line a left-hand letter; chain 0 is the query chain. Returns lines and query."""
    unused = list(LETTERS)
    rng.shuffle(unused)
    tail: dict[int, str] = {}  # chain -> letter holding its latest value
    progress = [0] * len(depths)
    live: set[str] = set()  # letters whose current value will still be read
    assigned: set[str] = set()
    lines = []
    for chain in order:
        rhs = tail[chain] if progress[chain] else str(rng.randint(0, 9))
        live.discard(rhs)
        free = sorted(assigned - live - {rhs})
        if options.rebinding and free and (not unused or rng.random() < options.rebinding_prob):
            lhs = rng.choice(free)
        elif unused:
            lhs = unused.pop()
        else:
            raise TaskError(f"ran out of letters for {len(order)} lines; use fewer lines")
        progress[chain] += 1
        if chain == 0 or progress[chain] < depths[chain]:
            live.add(lhs)  # read by the next line of its chain, or by the query
        tail[chain] = lhs
        assigned.add(lhs)
        lines.append((lhs, rhs))
    return lines, tail[0]


def render_binding(lines: list[tuple[str, str]], query_var: str, spacing: Spacing = "spaced") -> str:
    sep = " = " if spacing == "spaced" else "="
    return "".join(f"{lhs}{sep}{rhs}\n" for lhs, rhs in lines) + f"#{query_var}: "


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
        m = _LINE.match(line)
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


# -- dense supervision for training (extra queries, per-line values, relabelling) ---------------


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
