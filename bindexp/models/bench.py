"""What the benchmark scripts (`scripts/bench_*.py`) share: the model arguments, loading the model
they name, and wall-clock timing that waits for the GPU."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import torch

from bindexp.errors import BindexpError
from bindexp.models import load_model
from bindexp.models.loading import LoadedModel


class BenchParser(argparse.ArgumentParser):
    """argparse, with a bad argument reported as one `error:` line (exit status 2), like every script."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def count(text: str) -> int:
    """An argument that counts something: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def run_bench(body: Callable[[], int]) -> int:
    """`body()`'s exit status; a BindexpError (an unknown model, an impossible task) is one `error:` line, 2."""
    try:
        return body()
    except BindexpError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def model_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the arguments every model benchmark takes: --model --device --dtype
    --random_init --seed."""
    parser = BenchParser(description=description)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--random_init", action="store_true",
                        help="the model's shapes and tokenizer with random weights (speed only)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def load_bench_model(args: argparse.Namespace) -> LoadedModel:
    return load_model(args.model, device=args.device, dtype=args.dtype, random_init=args.random_init)


def sync() -> None:
    """Wait for queued GPU work (nothing on a CPU), so a clock reading covers it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], repeats: int = 1, gpu_warmup: bool = False) -> tuple[Any, float]:
    """(result of the last run, fastest seconds over `repeats` runs); `gpu_warmup`: one untimed run
    first when a GPU is present."""
    result = fn() if gpu_warmup and torch.cuda.is_available() else None
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return result, best
