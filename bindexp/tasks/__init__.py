"""Task layer: programs, counterfactuals, prompts and answer parsing. Pure Python.

Each built-in task is a package (`binding/`, `counter/`, `tracing/`) whose `spec.py` builds its
`TaskSpec`; the registry lists them, and generic code asks the spec, never a task's name.
"""

from bindexp.errors import TaskError
from bindexp.tasks.binding import MAX_HOPS, BindingOptions, analyse_binding, binding_program, render_binding
from bindexp.tasks.counter import analyse_counter
from bindexp.tasks.interface import TaskSpec
from bindexp.tasks.program import Program, execute_query
from bindexp.tasks.prompts import (
    build_prompt,
    parse_answer,
    parse_bool,
    parse_int,
    register_template,
    render_chat,
    template_names,
)
from bindexp.tasks.registry import DEFAULT_TASK, get_task, make_programs, register_task, task_names

__all__ = [
    "DEFAULT_TASK",
    "MAX_HOPS",
    "BindingOptions",
    "Program",
    "TaskError",
    "TaskSpec",
    "analyse_binding",
    "analyse_counter",
    "binding_program",
    "build_prompt",
    "execute_query",
    "get_task",
    "make_programs",
    "parse_answer",
    "parse_bool",
    "parse_int",
    "register_task",
    "register_template",
    "render_binding",
    "render_chat",
    "task_names",
    "template_names",
]
