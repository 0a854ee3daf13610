"""Entry points whose runner returns an exit status, on top of `bindexp.runs.cli.run_cli`.

`run_cli` turns bad settings, task/model errors and out-of-memory into one `error:` line and an
exit status; `run_main` adds two things the sweep, compare and robust runners need: the runner's
own status (1 when a run of a sweep failed) and `InputError` (a bad sweep file, no runs found)
as one line with status 2.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence, TypeVar

S = TypeVar("S")


class InputError(ValueError):
    """Bad input found after the settings parsed (a sweep file, an empty set of runs); one line."""


def run_main(settings_cls: type[S], runner: Callable[[S], int], argv: Sequence[str] | None) -> int:
    """Parse `argv` into `settings_cls`, call `runner`; return its status, or run_cli's on failure."""
    from bindexp.runs.cli import EXIT_BAD_INPUT, run_cli  # imports torch (for its OOM error): only when run

    status: list[int] = []

    def call(settings: S) -> None:
        try:
            status.append(runner(settings))
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            status.append(EXIT_BAD_INPUT)

    code = run_cli(settings_cls, call, argv)
    return code or (status[0] if status else 0)
