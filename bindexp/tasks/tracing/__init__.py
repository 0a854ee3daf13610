"""Simple value-tracing tasks: loops, increments, sequences, fibonacci, exceptions, boolean logic."""

from bindexp.tasks.tracing.spec import TASKS

__all__ = ["TASKS"]
