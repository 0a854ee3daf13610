"""Counting how often a value occurs in a list of digits."""

from bindexp.tasks.counter.generator import analyse_counter, counter_program
from bindexp.tasks.counter.spec import TASK

__all__ = ["TASK", "analyse_counter", "counter_program"]
