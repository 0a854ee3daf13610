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
import string
from random import Random
from typing import Literal

from bindexp.errors import TaskError
from bindexp.tasks.binding.analyser import analyse_binding
from bindexp.tasks.program import Program

LETTERS = string.ascii_lowercase  # the variables
MAX_HOPS = 4
Spacing = Literal["spaced", "compact"]


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


SEPARATORS: dict[str, str] = {"spaced": " = ", "compact": "="}  # between a line's variable and its value


def render_binding(lines: list[tuple[str, str]], query_var: str, spacing: Spacing = "spaced") -> str:
    sep = SEPARATORS[spacing]
    return "".join(f"{lhs}{sep}{rhs}\n" for lhs, rhs in lines) + f"#{query_var}: "
