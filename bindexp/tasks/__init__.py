"""Task layer: programs, counterfactuals, prompts and answer parsing. Pure Python."""

from bindexp.tasks.binding import BindingOptions, analyse_binding, binding_program, render_binding
from bindexp.tasks.program import Program, TaskError, execute_query
from bindexp.tasks.prompts import (
    build_prompt,
    parse_answer,
    parse_bool,
    parse_int,
    register_template,
    render_chat,
    template_names,
)
from bindexp.tasks.interface import TaskSpec
from bindexp.tasks.registry import get_task, make_programs, register_task, task_names
from bindexp.tasks.tracing import analyse_counter

__all__ = [
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
