"""scripts/examples.py runs and shows every task."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

from bindexp.tasks import task_names

pytestmark = pytest.mark.cli  # the command-line tier: scripts run as a user runs them

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "examples.py"


def load_script():
    spec = importlib.util.spec_from_file_location("examples_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_show_every_task(capsys):
    assert load_script().main(["--seed", "3", "--seq_len", "5", "--n", "1", "--depth_n", "300"]) == 0
    out = capsys.readouterr().out
    for task in task_names():
        assert f"=== {task}" in out
    for hops in range(1, 5):
        assert f"binding, hops={hops}" in out
        assert f"hops: {hops}  chain lines:" in out
    assert "cannot draw" not in out
    # the depth table: shares of depths 1..3 add up to all 100%
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+([\d.]+)%$", out, flags=re.MULTILINE)
    assert {int(depth) for depth, _, _ in rows} == {1, 2, 3}
    assert abs(sum(float(share) for _, _, share in rows) - 100) < 0.5


def test_impossible_lengths_are_reported_not_raised(capsys):
    assert load_script().main(["--seq_len", "2", "--n", "1", "--depth_n", "10"]) == 0
    out = capsys.readouterr().out
    assert "binding, hops=4 ===\n(cannot draw:" in out
