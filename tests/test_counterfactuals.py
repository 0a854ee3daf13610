"""Counterfactual pairs: one character edited, answers as Python computes them, seeded."""

import re

import pytest

from bindexp.tasks import TaskError
from bindexp.tasks.counterfactuals import KINDS, make_pairs

LINE = re.compile(r"^([a-z]) ?= ?([a-z0-9])$")


def _run(text):
    namespace = {}
    exec(text, namespace)
    query = text.rsplit("#", 1)[1].split(":")[0]
    return namespace[query]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hops", [2, 3])
@pytest.mark.parametrize("rebinding", [False, True])
def test_pairs_differ_in_one_character_with_python_answers(kind, hops, rebinding):
    pairs = make_pairs(kind, 25, 12, 7, hops=hops, rebinding=rebinding)
    assert len(pairs) == 25
    for pair in pairs:
        a, b = pair.original.text, pair.counterfactual.text
        assert len(a) == len(b)
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        assert diff == [pair.changed_at]
        assert pair.original.answer == _run(a) and pair.counterfactual.answer == _run(b)
        assert pair.original.spans == pair.counterfactual.spans or kind in ("query_chain", "chain_link")
        if kind == "distractor_value":
            assert pair.counterfactual.answer == pair.original.answer  # the control
            assert pair.changed_at not in [pair.original.spans["root_value"][0]]
        else:
            assert pair.counterfactual.answer != pair.original.answer
        if kind == "root_value":
            assert pair.changed_at == pair.original.spans["root_value"][0]
            assert pair.counterfactual.meta["chain_lines"] == pair.original.meta["chain_lines"]
        if kind == "query_chain":
            assert pair.changed_at == pair.original.spans["query_var"][0]


def test_pairs_are_deterministic_and_seeded():
    first = make_pairs("root_value", 10, 8, 3, hops=2)
    assert [p.to_dict() for p in first] == [p.to_dict() for p in make_pairs("root_value", 10, 8, 3, hops=2)]
    assert [p.to_dict() for p in first] != [p.to_dict() for p in make_pairs("root_value", 10, 8, 4, hops=2)]


def test_keep_filter_and_exclude():
    pairs = make_pairs("root_value", 10, 6, 0, keep=lambda p: not p.original.meta["heuristic"])
    assert all(not p.original.meta["heuristic"] for p in pairs)
    excluded = {p.original.text for p in make_pairs("root_value", 5, 6, 0)}
    assert not excluded & {p.original.text for p in make_pairs("root_value", 5, 6, 0, exclude=excluded)}


def test_bad_requests_fail_with_one_line():
    with pytest.raises(TaskError, match="unknown counterfactual"):
        make_pairs("swap_everything", 1, 6, 0)
    with pytest.raises(TaskError, match="hops >= 2"):
        make_pairs("chain_link", 1, 6, 0, hops=1)
