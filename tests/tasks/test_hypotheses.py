"""Competing hypotheses of binding and the counterfactual kinds that tell them apart: every
hypothesis's prediction equals Python's execution of the program its reading describes, and
pointer-following's equals the counterfactual's real answer."""

import pytest

from bindexp.errors import TaskError
from bindexp.tasks.binding import analyse_binding
from bindexp.tasks.causal_model import hypotheses
from bindexp.tasks.counterfactuals import CounterfactualPair, make_pairs
from bindexp.tasks.program import execute_query, run_program

HYPOTHESES = hypotheses("binding")
NEW_KINDS = ("swap_lines", "move_root", "rename_variable")
KINDS = ("root_value", "query_chain", "chain_link", "distractor_value", *NEW_KINDS)


def _lines(text):
    return text.split("\n")


def _with_rhs(text, line, rhs):
    lines = _lines(text)
    lines[line] = lines[line][:-1] + str(rhs)
    return "\n".join(lines)


def _with_query(text, name):
    lines = _lines(text)
    lines[-1] = f"#{name}: "
    return "\n".join(lines)


def _python(text, name):
    try:
        return execute_query(text, name)
    except TaskError:  # Python cannot run it (a name read before it is assigned): nothing to predict
        return None


def _python_expected(model_name, variable, pair, value):
    """Python's execution of the original program with `variable` set to `value`, as the
    hypothesis reads that variable (a text edit, then Python runs it)."""
    original = pair.original
    chain = original.meta["chain_lines"]
    if variable == "query":
        return _python(_with_query(original.text, value), value)
    if variable.startswith("pointer"):
        return _python(_with_rhs(original.text, chain[int(variable[7:]) - 1], value), original.query_var)
    if variable == "value":
        return _python(_with_rhs(original.text, chain[0], value), original.query_var)
    if variable.startswith("name"):  # the chain line assigns another name; the query looks its own up (by index:
        lines = _lines(original.text)  # positional's query finds its line whatever it is called)
        hop = int(variable[4:])
        lines[chain[hop - 1]] = str(value) + lines[chain[hop - 1]][1:]
        if model_name == "positional" and hop == len(chain):
            return run_program("\n".join(lines[: chain[-1] + 1]))[str(value)]
        return _python("\n".join(lines), original.query_var)
    if variable == "root":  # the address of a constant: that line's constant, when it is one
        line = max(i for i, text in enumerate(_lines(original.text)[:-1]) if text[0] == value)
        return run_program(original.code)[value] if _lines(original.text)[line][-1].isdigit() else None
    if variable == "query_line":
        name = _lines(original.text)[value][0]
        return _python(_with_query(original.text, name), name)
    if variable == "lines12":  # the constants Python leaves on lines 1 and 2 of that reading (copies ignored)
        constants = [line[:-1] + rhs for line, rhs in zip(_lines(original.text)[:2], value) if rhs.isdigit()]
        values = run_program("\n".join(constants)) if constants else {}
        return frozenset(values[line[0]] for line in constants) or None
    raise AssertionError(variable)


def _pairs(kind, hops):
    return make_pairs(kind, 25, 7, hops + 10, hops=hops)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hops", [1, 2, 3])
def test_every_prediction_is_pythons_execution_under_that_reading(kind, hops):
    if kind in ("chain_link", "move_root") and hops == 1:
        pytest.skip("needs hops >= 2")
    for pair in _pairs(kind, hops):
        assert pair.counterfactual.answer == execute_query(pair.counterfactual.text, pair.counterfactual.query_var)
        for name, model in HYPOTHESES.items():
            for variable in model.variables_of(pair.original):
                value = model.value_of(pair, variable.name)
                expected = _python_expected(name, variable.name, pair, value)
                assert model.predict_variable(pair, variable.name) == expected, (name, variable.name, pair.to_dict())


@pytest.mark.parametrize("kind", KINDS)
def test_a_cell_on_a_chain_line_carries_what_the_counterfactual_has_at_that_position(kind):
    """A patched cell takes the counterfactual's activation at the *same position*: at a chain
    line's token, the pointer is the counterfactual's character there and the carried value is
    what Python leaves in the variable of the counterfactual's line at that index; the output is
    then Python's on the original so edited."""
    for pair in _pairs(kind, 3):
        original, counterfactual = pair.original, pair.counterfactual
        for name in ("pointer_following", "direct_lookup", "positional"):
            model = HYPOTHESES[name]
            for k, line in enumerate(original.meta["chain_lines"], 1):
                for role in (f"chain{k}_lhs", f"chain{k}_rhs", f"chain{k}_end"):
                    if k >= 2:
                        start, end = original.spans[f"chain{k}_rhs"]
                        assert model.value_of(pair, f"pointer{k}", role) == counterfactual.text[start:end]
                        expected = _python(_with_rhs(original.text, line, counterfactual.text[start:end]),
                                           original.query_var)
                        assert model.predict_variable(pair, f"pointer{k}", role) == expected
                    start = original.spans[f"chain{k}_lhs"][0]
                    assert model.value_of(pair, f"name{k}", role) == counterfactual.text[start]
                    assert model.predict_variable(pair, f"name{k}", role) == _python_expected(
                        name, f"name{k}", pair, counterfactual.text[start])
                    lines = _lines(counterfactual.text)
                    held = run_program("\n".join(lines[: line + 1]))[lines[line][0]]
                    assert model.value_of(pair, "value", role) == held
                    assert model.predict_variable(pair, "value", role) == _python(
                        _with_rhs(original.text, original.meta["chain_lines"][0], held), original.query_var)


def _unchanged(model, pair, variable):
    """The variable's value read from the original by the same reading (a pair of the original with itself)."""
    itself = CounterfactualPair(pair.original, pair.original, pair.kind, 0)
    return model.value_of(pair, variable) == model.value_of(itself, variable)


@pytest.mark.parametrize("kind", KINDS)
def test_pointer_following_predicts_the_real_answer(kind):
    """For every kind, the interchange the kind targets in pointer-following's reading predicts the
    counterfactual's answer (by Python). Variable by variable, what a kind changes and the kind
    does not target predicts something else, which is what a cell holding only that variable
    would do: under move_root the pointer alone points at the other constant; under
    rename_variable the query's *name* alone names another variable of the original, and the
    query's line renamed alone leaves the query's name assigned nowhere (no prediction)."""
    model = HYPOTHESES["pointer_following"]
    for pair in _pairs(kind, 2):
        assert model.predict_kind(pair) == execute_query(pair.counterfactual.text, pair.counterfactual.query_var)
        for variable in model.variables_of(pair.original):
            predicted = model.predict_variable(pair, variable.name)
            if _unchanged(model, pair, variable.name):
                assert predicted == pair.original.answer
            elif kind == "rename_variable" and variable.name == "query":
                assert predicted == run_program(pair.original.code)[pair.counterfactual.query_var] != pair.original.answer
            elif kind == "rename_variable":  # the query's line renamed alone: the query's name is assigned nowhere
                assert variable.name == "name2" and predicted is None
            elif kind == "move_root" and variable.name == "pointer2":
                assert predicted != pair.counterfactual.answer
            else:
                assert predicted == pair.counterfactual.answer, (variable.name, pair.to_dict())


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_prediction_is_pythons_execution_under_that_reading(kind):
    for pair in _pairs(kind, 2):
        for name, model in HYPOTHESES.items():
            target = model.interventions.get(kind)
            if target in (None, "none"):
                assert model.predict_kind(pair) == model.output(pair.original, None, None)
                continue
            if target == "pointer":
                target = model.pointer_of(pair)
            expected = _python_expected(name, target, pair, model.value_of(pair, target))
            assert model.predict_kind(pair) == expected, (name, kind)
    swapped, moved = _pairs("swap_lines", 2)[0], _pairs("move_root", 2)[0]
    assert HYPOTHESES["positional"].predict_kind(swapped) != swapped.counterfactual.answer
    assert HYPOTHESES["direct_lookup"].predict_kind(moved) != moved.counterfactual.answer


def test_the_new_kinds_tell_the_hypotheses_apart():
    """Each new kind changes one hypothesis's prediction while pointer-following's stays the answer."""
    for pair in _pairs("swap_lines", 2):
        assert HYPOTHESES["positional"].predict_variable(pair, "query_line") != pair.original.answer
        assert HYPOTHESES["pointer_following"].predict_variable(pair, "query") == pair.original.answer
        moved = [i for i, j in enumerate(pair.line_map) if i != j]
        assert len(moved) == 2 and pair.original.meta["chain_lines"][-1] in moved
        for i, j in enumerate(pair.line_map):  # the line map says where each line went
            assert _lines(pair.original.text)[i] == _lines(pair.counterfactual.text)[j]
    for pair in _pairs("move_root", 3):
        assert HYPOTHESES["direct_lookup"].predict_variable(pair, "root") != pair.original.answer
        assert HYPOTHESES["pointer_following"].predict_variable(pair, "value") == pair.original.answer
        assert pair.counterfactual.meta["chain_lines"][0] != pair.original.meta["chain_lines"][0]
    for pair in _pairs("rename_variable", 1):
        assert HYPOTHESES["positional"].predict_variable(pair, "query_line") == pair.original.answer
        assert HYPOTHESES["direct_lookup"].predict_variable(pair, "query") != pair.original.answer
    for kind in NEW_KINDS:
        for pair in _pairs(kind, 2):
            assert len(pair.counterfactual.text) == len(pair.original.text)
            assert pair.counterfactual.answer == pair.original.answer  # the real answer stays


def test_hand_written_interchanges_of_the_new_kinds():
    program = "a = 3\nc = 5\nb = a\nd = c\n#b: "
    pair = lambda text, kind, line_map=None: CounterfactualPair(  # noqa: E731
        analyse_binding(program), analyse_binding(text), kind, 0, line_map)
    swapped = pair("a = 3\nc = 5\nd = c\nb = a\n#b: ", "swap_lines", (0, 1, 3, 2))
    assert HYPOTHESES["positional"].predict_variable(swapped, "query_line") == 5  # line 3 of the original: d = c
    assert HYPOTHESES["pointer_following"].predict_variable(swapped, "query") == 3
    assert HYPOTHESES["pointer_following"].predict_variable(swapped, "pointer2") == 3  # b's line moved, reads a
    moved = pair("a = 5\nc = 3\nb = c\nd = c\n#b: ", "move_root")
    assert HYPOTHESES["direct_lookup"].predict_variable(moved, "root") == 5  # c holds 5 in the original
    assert HYPOTHESES["pointer_following"].predict_variable(moved, "value") == 3
    renamed = pair("a = 3\nc = 5\nd = a\nb = c\n#d: ", "rename_variable")
    assert HYPOTHESES["pointer_following"].predict_variable(renamed, "query") == 5  # d holds 5 in the original
    assert HYPOTHESES["positional"].predict_variable(renamed, "query_line") == 3
    assert HYPOTHESES["heuristic"].output(analyse_binding(program), None, None) == frozenset({3, 5})
    nowhere = pair("a = 3\nc = 5\nb = a\nd = c\n#x: ".replace("#x", "#b"), "query_chain")
    assert HYPOTHESES["pointer_following"].predict_variable(nowhere, "query") == 3


def test_where_each_hypothesis_lets_a_variable_be_carried():
    program = analyse_binding("a = 3\nc = 5\nb = a\nd = c\n#b: ")
    assert HYPOTHESES["pointer_following"].carriers(program, "chain2_end") == ["pointer2", "value"]
    assert HYPOTHESES["direct_lookup"].carriers(program, "chain2_end") == ["pointer2"]  # the value skips the chain
    assert HYPOTHESES["direct_lookup"].carriers(program, "final") == ["query", "root", "value"]
    assert HYPOTHESES["positional"].carriers(program, "query_var") == ["query_line"]
    assert HYPOTHESES["pointer_following"].carriers(program, "chain2_lhs") == ["value", "name2"]
    assert HYPOTHESES["heuristic"].carriers(program, "chain1_lhs") == ["lines12"]
    assert HYPOTHESES["pointer_following"].carriers(program, "distractor1_value") == []


def test_the_new_kinds_refuse_rebinding_and_move_root_needs_two_hops():
    with pytest.raises(TaskError, match="rebinding"):
        make_pairs("swap_lines", 2, 6, 0, hops=2, rebinding=True)
    with pytest.raises(TaskError, match="hops >= 2"):
        make_pairs("move_root", 2, 6, 0, hops=1)
    with pytest.raises(TaskError, match="no competing hypotheses"):
        hypotheses("counter")
