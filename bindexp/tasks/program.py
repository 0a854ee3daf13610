"""The `Program` record every task returns, and running a program to get its answer.

Pure Python: nothing here imports torch or wandb.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any

from bindexp.errors import TaskError

Answer = int | bool
Span = tuple[int, int]  # character offsets [start, end) into `Program.text`


@dataclasses.dataclass(frozen=True)
class Program:
    """One generated program and everything known about it.

    `text` ends with the query comment (`#x: `, trailing space), so the answer is the next token.
    `answer` is what Python computes by executing `text` (see `execute_query`).
    `spans` maps role names (e.g. `root_value`, `query_var`, `final`) to character spans of `text`.
    `meta` holds task-specific, JSON-serialisable facts (hops, chain lines, heuristic labels...).
    """

    task: str
    text: str
    answer: Answer
    query_var: str
    seq_len: int
    seed: int = 0
    spans: dict[str, Span] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def code(self) -> str:
        """The program without its query comment."""
        return self.text[: self.text.rindex("#")]

    @property
    def answer_text(self) -> str:
        return str(self.answer)

    def span_text(self, role: str) -> str:
        start, end = self.spans[role]
        return self.text[start:end]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Program":
        """The inverse of `to_dict` (also after a JSON round trip: spans come back as tuples);
        keys that are not fields are ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["spans"] = {role: tuple(span) for role, span in values.get("spans", {}).items()}
        return cls(**values)


# The only names a generated program may use; nothing else from builtins is reachable.
_SAFE_BUILTINS = {"range": range, "len": len, "ZeroDivisionError": ZeroDivisionError}


def run_program(text: str) -> dict[str, Any]:
    """Run `text` as Python with a minimal set of builtins; return its variables.

    Only generated (or researcher-registered) programs are run here.
    """
    namespace: dict[str, Any] = {"__builtins__": _SAFE_BUILTINS}
    exec(compile(text, "<program>", "exec"), namespace)  # noqa: S102 - our own generated code
    del namespace["__builtins__"]
    return namespace


def execute_query(text: str, query_var: str) -> Answer:
    """Run `text` as Python and return the value of `query_var` afterwards.

    This is the single source of truth for labels: every task's `answer` must equal it.
    """
    namespace = run_program(text)
    if query_var not in namespace:
        raise TaskError(f"program never assigns its query variable {query_var!r}")
    return namespace[query_var]


def derive_rng(*parts: object) -> random.Random:
    """A random generator seeded from a stable hash of `parts`.

    Different (task, options, seq_len, seed, index) tuples give independent streams, so a program
    of length L+1 does not start with the program of length L, and the same tuple always gives the
    same program on every machine and Python version.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
