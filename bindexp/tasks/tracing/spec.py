"""The simple value-tracing tasks as the registry knows them (a generator each, nothing to patch)."""

from __future__ import annotations

from bindexp.tasks.interface import BOOLEANS, TaskSpec
from bindexp.tasks.tracing import generators

TASKS = (
    TaskSpec("loop", generators.loop_program),
    TaskSpec("loop_unrolled", generators.loop_unrolled_program),
    TaskSpec("varying_increments", generators.varying_increments_program),
    TaskSpec("arithmetic_sequence", generators.arithmetic_sequence_program),
    TaskSpec("fibonacci", generators.fibonacci_program),
    TaskSpec("exception", generators.exception_program),
    TaskSpec("boolean", generators.boolean_program, BOOLEANS, bool),
)
