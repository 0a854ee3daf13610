"""Variable binding: chains of assignments and a query (see `generator` for the definitions)."""

from bindexp.tasks.binding.analyser import analyse_binding, role_columns
from bindexp.tasks.binding.generator import MAX_HOPS, BindingOptions, binding_program, render_binding
from bindexp.tasks.binding.spec import TASK

__all__ = ["MAX_HOPS", "TASK", "BindingOptions", "analyse_binding", "binding_program", "render_binding", "role_columns"]
