"""Tracing tasks: every label equals what Python computes when this test runs the program itself."""

from __future__ import annotations

import ast
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bindexp.errors import TaskError
from bindexp.tasks import get_task, make_programs, task_names
from bindexp.tasks.counter import counter_program
from bindexp.tasks.tracing import generators as tracing

GENERATORS = {
    "loop": tracing.loop_program,
    "loop_unrolled": tracing.loop_unrolled_program,
    "varying_increments": tracing.varying_increments_program,
    "arithmetic_sequence": tracing.arithmetic_sequence_program,
    "counter": counter_program,
    "fibonacci": tracing.fibonacci_program,
    "exception": tracing.exception_program,
    "boolean": tracing.boolean_program,
}
TASKS = sorted(GENERATORS)
LENGTHS = [1, 2, 3, 5, 8, 13, 20]
FAST = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def python_value(text: str, var: str):
    namespace: dict = {}
    exec(text, namespace)  # noqa: S102 - test programs only
    return namespace[var]


def assignment_lines(code: str) -> list[str]:
    return [line for line in code.splitlines() if re.match(r"^[A-Za-z_][A-Za-z_0-9]* = ", line)]


def check_length(task: str, code: str, length: int) -> None:
    """Read the program's size off its text, independently of the generator's bookkeeping."""
    lines = code.splitlines()
    if task in ("loop", "fibonacci"):
        assert f"range({length}):" in code
    elif task == "loop_unrolled":
        assert sum("+=" in line for line in lines) == length and len(lines) == length + 1
    elif task == "varying_increments":
        assert sum(re.fullmatch(r"[a-z] [+-]= [1-5]", line) is not None for line in lines) == length
    elif task == "arithmetic_sequence":
        assert len(assignment_lines(code)) == len(lines) == length + 1
    elif task == "counter":
        items = ast.literal_eval(lines[0].split(" = ", 1)[1])
        assert len(items) == length
    elif task == "exception":
        assert sum(line == "try:" for line in lines) == length
    elif task == "boolean":
        names = [line.split(" = ")[0] for line in assignment_lines(code)]
        assert len(names) == len(set(names)) == length + 2
    else:  # pragma: no cover - a new task needs a line here
        raise AssertionError(task)


def check_program(p, task: str, length: int) -> None:
    text = p.text
    *code_lines, query = text.split("\n")
    match = re.fullmatch(r"#([A-Za-z_][A-Za-z_0-9]*): ", query)
    assert match, query
    var = match.group(1)
    assert p.task == task and p.query_var == var and p.seq_len == length
    assert p.code == "\n".join(code_lines) + "\n"
    value = python_value(text, var)
    assert p.answer == value
    assert type(p.answer) is (bool if task == "boolean" else int)
    assert p.answer_text == str(value)
    assert p.span_text("query_var") == var
    assert p.spans["query_var"][0] == len(text) - len(query) + 1
    assert p.spans["final"] == (len(text) - 1, len(text)) and text[-1] == " "
    check_length(task, p.code, length)


def test_registry_has_every_tracing_task():
    for task in TASKS:
        assert task in task_names()
        assert get_task(task).generate is GENERATORS[task]
        assert get_task(task).options is None


@pytest.mark.parametrize("task", TASKS)
def test_labels_equal_python(task):
    for length in LENGTHS:
        programs = make_programs(task, 40, length, length)
        assert len(programs) == 40
        for p in programs:
            check_program(p, task, length)


@FAST
@given(task=st.sampled_from(TASKS), length=st.integers(1, 22), seed=st.integers(0, 2**32))
def test_generators_directly(task, length, seed):
    p = GENERATORS[task](length, random.Random(seed))
    check_program(p, task, length)


@pytest.mark.parametrize("task", TASKS)
def test_answers_vary(task):
    # a generator stuck on one answer would pass the label checks; the answers must vary
    answers = {p.answer for p in make_programs(task, 60, 6, 0)}
    assert len(answers) >= 2


@pytest.mark.parametrize("task", TASKS)
def test_negative_length_raises(task):
    with pytest.raises(TaskError) as err:
        make_programs(task, 1, -1, 0)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("task", TASKS)
def test_length_zero_is_correct_or_refused(task):
    try:
        programs = make_programs(task, 10, 0, 0)
    except TaskError as err:
        assert "\n" not in str(err)
        return
    for p in programs:
        check_program(p, task, 0)


def test_boolean_needs_distinct_variables():
    with pytest.raises(TaskError) as err:
        make_programs("boolean", 1, 23, 0)
    assert "\n" not in str(err.value)
