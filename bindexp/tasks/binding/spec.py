"""The binding task as the registry knows it: everything generic code asks of it."""

from __future__ import annotations

from bindexp.tasks.binding.analyser import analyse_binding, binding_roles, check_systematic, hop_of, reanalyse_binding
from bindexp.tasks.binding.causal_model import CAUSAL_MODEL
from bindexp.tasks.binding.counterfactuals import COUNTERFACTUALS
from bindexp.tasks.binding.generator import MAX_HOPS, BindingOptions, binding_program
from bindexp.tasks.binding.hypotheses import HYPOTHESES
from bindexp.tasks.binding.programs_file import FILE_OPTIONS, check_file_line
from bindexp.tasks.binding.supervision import (
    ALL_PAIRS,
    constant_pairs,
    extra_queries,
    line_values,
    relabel_binding,
    root_pair,
)
from bindexp.tasks.interface import TaskSpec, TrainingSupport, answer_digit
from bindexp.vocab import DIGITS


def query_letter(program) -> int:
    """The query variable's letter as a class (a-z)."""
    return ord(program.query_var) - ord("a")


TASK = TaskSpec(
    "binding", binding_program, DIGITS, int, BindingOptions, axes=("hops", "seq_len"),
    counterfactuals=COUNTERFACTUALS, reanalyse=reanalyse_binding, pair_candidates=DIGITS,
    role_columns=binding_roles, value_role="root_value",
    analyse=lambda text, seq_len: analyse_binding(text, seq_len=seq_len), hop_of=hop_of,
    check_systematic=check_systematic, causal_model=CAUSAL_MODEL, hypotheses=HYPOTHESES,
    probe_labels={"value": (answer_digit, 10), "variable": (query_letter, 26)},
    check_file_line=check_file_line, file_options=FILE_OPTIONS,
    training=TrainingSupport(ALL_PAIRS, constant_pairs, root_pair, line_values, extra_queries, relabel_binding,
                             MAX_HOPS),
)
