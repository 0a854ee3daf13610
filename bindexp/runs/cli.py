"""Command-line entry points share this: parse settings, run, turn known failures into one line.

Imports no torch, so sweep, compare and agent scripts start fast.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence, TypeVar

from bindexp.errors import BindexpError, InputError
from bindexp.runs.settings import parse_settings

S = TypeVar("S")

EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3


def run_cli(settings_cls: type[S], runner: Callable[[S], int | None], argv: Sequence[str] | None) -> int:
    """Parse `argv` into `settings_cls` and call `runner`; return the exit status: the runner's
    own (None counts as 0), 2 for a BindexpError, 3 for running out of memory."""
    try:
        return runner(parse_settings(settings_cls, argv)) or 0
    except BindexpError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print("error: out of memory; lower --batch_size or use a smaller model", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except RuntimeError as err:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if not any(words in str(err).lower() for words in ("out of memory", "not enough memory")):
            raise
        print("error: out of memory; lower --batch_size, use --quantization=4bit or a smaller model",
              file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
