"""What a programs file's binding lines must satisfy beyond what every task's lines do: the
recorded options' types, one line per assignment, and the hops the program really has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bindexp.errors import TaskError
from bindexp.tasks.binding.generator import SEPARATORS
from bindexp.tasks.program import Program

# the task options a file records (find_robust writes the run's task options)
FILE_OPTIONS: dict[str, tuple[tuple[type, ...], str]] = {
    "distractor_chains": ((int, type(None)), "an integer or null"),
    "max_distractor_depth": ((int,), "an integer"),
    "rebinding": ((bool,), "true or false"),
    "spacing": ((str,), "a string"),
}


def check_file_line(line: Mapping[str, Any], program: Program) -> None:
    """The line's seq_len, spacing and hops against its program (TaskError naming the first that differs)."""
    body_lines = line["program"].count("\n")
    if body_lines != line["seq_len"]:
        raise TaskError(f"seq_len is {line['seq_len']} but the program has {body_lines} lines")
    spacing = (line.get("options") or {}).get("spacing", "spaced")
    sep = SEPARATORS.get(spacing) if isinstance(spacing, str) else None  # (a bad value: the options check names it)
    for number, text in enumerate(line["program"].split("\n")[:-1] if sep else [], start=1):
        if text.count(sep) != 1 or text.count("=") != 1 or text.strip() != text or (spacing == "compact" and " " in text):
            raise TaskError(f"options spacing is {spacing!r} but program line {number} is {text!r}")
    if line["hops"] != program.meta["hops"]:
        raise TaskError(f"hops is {line['hops']} but the program's query is {program.meta['hops']} "
                        "hops from its constant")
