"""Tasks by name: the built-in ones and any a researcher registers, and seeded program sets."""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable
from random import Random
from typing import Any

from bindexp.errors import TaskError
from bindexp.tasks.interface import TaskSpec
from bindexp.tasks.program import Answer, Program, derive_rng, execute_query

# A researcher's generator: (length, rng) -> (program text, answer) or (text, answer, metadata).
UserGenerator = Callable[[int, Random], "tuple[str, Answer] | tuple[str, Answer, dict] | Program"]

_QUERY_LINE = re.compile(r"\n?#([A-Za-z_][A-Za-z_0-9]*): ?$")


_TASKS: dict[str, TaskSpec] = {}
DEFAULT_TASK = "binding"  # what a run draws unless told otherwise


def register_task(
    name: str,
    generator: UserGenerator,
    *,
    candidates: tuple[str, ...] | None = None,
    answer_type: type = int,
    verify: bool = True,
    **interface: Any,
) -> TaskSpec:
    """Register a generator `(length, rng) -> (text, answer[, metadata])` under `name`.

    The text must end with a query comment such as `#x: `. With `verify`, the program is executed
    and a generator whose stated answer differs from Python's raises at once. Registering a name
    again replaces your earlier generator; built-in task names are refused. `interface` takes the
    other fields of `TaskSpec` (counterfactuals, reanalyse, role_columns ...) to make it patchable.
    """
    if name in _BUILTIN_NAMES:
        raise TaskError(f"{name!r} is a built-in task; register yours under another name")

    def generate(length: int, rng: Random) -> Program:
        produced = generator(length, rng)
        if isinstance(produced, Program):
            return produced
        text, answer, *rest = produced
        meta = dict(rest[0]) if rest else {}
        match = _QUERY_LINE.search(text)
        if verify:
            if not match:
                raise TaskError(f"task {name!r}: program must end with a query comment like '#x: '")
            computed = execute_query(text, match.group(1))
            if computed != answer:
                raise TaskError(f"task {name!r}: stated answer {answer!r} but Python computes {computed!r}")
        return Program(
            task=name,
            text=text,
            answer=answer,
            query_var=match.group(1) if match else "",
            seq_len=length,
            spans={"final": (len(text) - 1, len(text))},
            meta=meta,
        )

    spec = TaskSpec(name, generate, candidates, answer_type, **interface)
    _TASKS[name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    try:
        return _TASKS[name]
    except KeyError:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}") from None


def task_names() -> list[str]:
    return sorted(_TASKS)


def make_programs(
    task: str,
    n: int,
    seq_len: int,
    seed: int,
    *,
    stream: str = "test",
    exclude: frozenset[str] | set[str] = frozenset(),
    **options: Any,
) -> list[Program]:
    """`n` programs of `task`, each an independent draw fixed by (task, options, seq_len, seed, i).

    `stream` separates program sets drawn from the same seed (e.g. few-shot examples vs test
    programs); programs whose text is in `exclude` are skipped and the next draw is taken.
    """
    spec = get_task(task)
    if n < 0:
        raise TaskError(f"number of programs must be >= 0, got {n}")
    parsed = spec.make_options(**options)
    if hasattr(parsed, "check"):
        parsed.check(seq_len)  # fail before drawing anything
    # the stream depends on the options' values, not on which of them were written out
    resolved = sorted(dataclasses.asdict(parsed).items()) if parsed is not None else []
    programs: list[Program] = []
    draw = 0
    while len(programs) < n:
        if draw > 100 * n + 1000:
            raise TaskError(f"could not draw {n} distinct programs of {task!r} at seq_len={seq_len}")
        rng = derive_rng(task, stream, resolved, seq_len, seed, draw)
        draw += 1
        program = spec.generate(seq_len, rng, parsed) if parsed is not None else spec.generate(seq_len, rng)
        if program.text in exclude:
            continue
        programs.append(dataclasses.replace(program, seed=seed, meta={**program.meta, "draw": draw - 1}))
    return programs


def _builtin(spec: TaskSpec) -> None:
    _TASKS[spec.name] = spec


# The built-in tasks: one entry per task package, whose `spec.py` builds its TaskSpec (`TASK`) or,
# for a package of several small tasks, their TaskSpecs (`TASKS`).
BUILTIN_PACKAGES = ("binding", "counter", "tracing")
for _package in BUILTIN_PACKAGES:
    _module = importlib.import_module(f"bindexp.tasks.{_package}.spec")
    for _spec in getattr(_module, "TASKS", None) or (_module.TASK,):
        _builtin(_spec)
_BUILTIN_NAMES = frozenset(_TASKS)


def patchable_tasks() -> list[str]:
    """Tasks that declare counterfactual kinds."""
    return sorted(name for name, spec in _TASKS.items() if spec.counterfactuals)


def trainable_tasks() -> list[str]:
    """Tasks that declare what training from scratch needs."""
    return sorted(name for name, spec in _TASKS.items() if spec.training is not None)
