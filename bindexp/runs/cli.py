"""Command-line entry points share this: parse settings, run, turn known failures into one line."""

from __future__ import annotations

import sys
from typing import Callable, Sequence, TypeVar

from bindexp.models.loading import ModelError
from bindexp.runs.settings import SettingsParseError, parse_settings
from bindexp.tasks.program import TaskError

S = TypeVar("S")

EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3


def run_cli(settings_cls: type[S], runner: Callable[[S], object], argv: Sequence[str] | None) -> int:
    """Parse `argv` into `settings_cls`, call `runner`; return the process exit code."""
    try:
        settings = parse_settings(settings_cls, argv)
    except SettingsParseError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        runner(settings)
    except (TaskError, ModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print("error: out of memory; lower --batch_size or use a smaller model", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except RuntimeError as err:
        if "out of memory" not in str(err).lower():
            raise
        print("error: CUDA out of memory; lower --batch_size, use --quantization=4bit or a smaller model",
              file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    return 0
