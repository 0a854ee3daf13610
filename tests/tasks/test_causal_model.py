"""The declared causal model of binding: its predictions against Python's own execution, and by hand."""

import pytest

from bindexp.errors import TaskError
from bindexp.tasks.binding import analyse_binding
from bindexp.tasks.causal_model import CONTROL, causal_model, group_by_variable
from bindexp.tasks.counterfactuals import CounterfactualPair, make_pairs
from bindexp.tasks.program import execute_query

MODEL = causal_model("binding")


@pytest.mark.parametrize("kind, hops", [("root_value", 1), ("root_value", 3), ("query_chain", 2), ("chain_link", 2),
                                        ("chain_link", 4), ("distractor_value", 2)])
def test_predictions_match_python_on_the_counterfactual(kind, hops):
    pairs = make_pairs(kind, 40, 10, 3, hops=hops)
    for pair in pairs:
        # the answer Python computes for the counterfactual program (not the pair's stored answer)
        python = execute_query(pair.counterfactual.text, pair.counterfactual.text.rsplit("#", 1)[1][0])
        assert MODEL.predict(pair) == python


def test_each_kind_names_its_variable():
    assert {MODEL.variable_of(p) for p in make_pairs("root_value", 5, 6, 0, hops=2)} == {"value"}
    assert {MODEL.variable_of(p) for p in make_pairs("query_chain", 5, 6, 0, hops=2)} == {"query"}
    assert {MODEL.variable_of(p) for p in make_pairs("distractor_value", 5, 6, 0, hops=2)} == {CONTROL}
    for pair in make_pairs("chain_link", 30, 8, 0, hops=4):
        hop = int(MODEL.variable_of(pair).removeprefix("pointer"))
        assert pair.original.spans[f"chain{hop}_rhs"][0] == pair.changed_at and 2 <= hop <= 4


def _pair(original: str, counterfactual: str, kind: str) -> CounterfactualPair:
    at = next(i for i, (a, b) in enumerate(zip(original, counterfactual)) if a != b)
    return CounterfactualPair(analyse_binding(original), analyse_binding(counterfactual), kind, at)


def test_hand_written_interchanges():
    program = "a = 3\nc = 5\nb = a\nd = c\n#b: "
    assert MODEL.predict(_pair(program, program.replace("a = 3", "a = 7"), "root_value")) == 7
    assert MODEL.predict(_pair(program, program.replace("#b", "#d"), "query_chain")) == 5
    assert MODEL.predict(_pair(program, program.replace("b = a", "b = c"), "chain_link")) == 5
    assert MODEL.variable_of(_pair(program, program.replace("b = a", "b = c"), "chain_link")) == "pointer2"
    # the pointer reads what its variable holds *at that line*, not at the end of the program
    rebound = "a = 3\nb = a\na = 8\n#b: "
    assert MODEL.output(analyse_binding(rebound), "pointer2", "a") == 3
    assert MODEL.output(analyse_binding(program), None, None) == 3


def test_declaration_table_and_grouping():
    program = analyse_binding("a = 3\nb = a\nc = b\n#c: ")
    rows = MODEL.table(program)
    assert [r["variable"] for r in rows] == ["query", "pointer3", "pointer2", "value"]
    assert {r["variable"]: r["role"] for r in rows}["pointer3"] == "chain3_rhs"
    assert {r["variable"]: r["counterfactuals"] for r in rows} == {
        "query": "query_chain", "pointer3": "chain_link", "pointer2": "chain_link", "value": "root_value"}
    groups = group_by_variable(MODEL, make_pairs("chain_link", 30, 8, 1, hops=3))
    assert set(groups) == {"pointer2", "pointer3"}


def test_unknown_task_or_kind_is_a_task_error():
    with pytest.raises(TaskError, match="no causal model"):
        causal_model("counter")
    pair = make_pairs("root_value", 1, 5, 0, hops=1)[0]
    with pytest.raises(TaskError, match="maps no variable"):
        MODEL.variable_of(CounterfactualPair(pair.original, pair.counterfactual, "made_up", pair.changed_at))
