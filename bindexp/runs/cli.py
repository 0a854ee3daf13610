"""Command-line entry points share this: parse settings, run, turn known failures into one line.

Imports no torch, so sweep, compare and agent scripts start fast.
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from bindexp.errors import BindexpError
from bindexp.runs.settings import parse_settings

S = TypeVar("S")

EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_NO_SPACE = 4


def run_cli(settings_cls: type[S], runner: Callable[[S], int | None], argv: Sequence[str] | None) -> int:
    """Parse `argv` into `settings_cls` and call `runner`; return the exit status: the runner's
    own (None counts as 0), 2 for a BindexpError, 3 for running out of memory, 4 for a full disk."""
    try:
        with sigterm_raises():
            return runner(parse_settings(settings_cls, argv)) or 0
    except Terminated as err:  # the run (Tracker) has recorded it; say so and stop
        print(f"error: {err}", file=sys.stderr)
        return EXIT_TERMINATED
    except BindexpError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(f"error: no space left on device{where}; what was written before is kept", file=sys.stderr)
        return EXIT_NO_SPACE
    except MemoryError:
        print("error: out of memory; lower --batch_size or use a smaller model", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except RuntimeError as err:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if not any(words in str(err).lower() for words in ("out of memory", "not enough memory")):
            raise
        print("error: out of memory; lower --batch_size, use --quantization=4bit or a smaller model",
              file=sys.stderr)
        return EXIT_OUT_OF_MEMORY


# ---------------------------------------------------------------- SIGTERM (slurm preemption, a runner stopping)

EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException (like KeyboardInterrupt), so no `except Exception` swallows it:
    it unwinds the run, whose Tracker records it as the run's `error` and keeps the rows written."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated("terminated (SIGTERM)")


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises Terminated (only the main thread can set signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
