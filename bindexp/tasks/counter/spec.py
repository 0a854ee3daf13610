"""The counter task as the registry knows it."""

from __future__ import annotations

from bindexp.tasks.counter.counterfactuals import COUNTERFACTUALS
from bindexp.tasks.counter.generator import analyse_counter, counter_program, counter_roles
from bindexp.tasks.interface import TaskSpec
from bindexp.vocab import DIGITS

TASK = TaskSpec("counter", counter_program, counterfactuals=COUNTERFACTUALS,
                reanalyse=lambda program, text: analyse_counter(text, program.seq_len),
                pair_candidates=DIGITS, role_columns=counter_roles, value_role="target",
                analyse=lambda text, seq_len: analyse_counter(text, seq_len))
