"""Counterfactual pairs: one character edited, answers as Python computes them, seeded."""

import re

import pytest

from bindexp.errors import TaskError
from bindexp.tasks import get_task
from bindexp.tasks.counterfactuals import make_pairs

LINE = re.compile(r"^([a-z]) ?= ?([a-z0-9])$")


def _run(text):
    namespace = {}
    exec(text, namespace)
    query = text.rsplit("#", 1)[1].split(":")[0]
    return namespace[query]


EDITS = tuple(name for name, kind in get_task("binding").counterfactuals.items() if kind.rewrite is None)
REWRITES = tuple(name for name, kind in get_task("binding").counterfactuals.items() if kind.rewrite is not None)


@pytest.mark.parametrize("kind", EDITS)
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


@pytest.mark.parametrize("kind", REWRITES)
@pytest.mark.parametrize("hops", [2, 3])
def test_rewrites_keep_length_line_shapes_and_the_answer_python_computes(kind, hops):
    pairs = make_pairs(kind, 25, 12, 7, hops=hops)
    assert len(pairs) == 25 and set(REWRITES) == {"swap_lines", "move_root", "rename_variable"}
    for pair in pairs:
        a, b = pair.original.text, pair.counterfactual.text
        assert len(a) == len(b) and pair.changed_at == min(i for i in range(len(a)) if a[i] != b[i])
        assert pair.original.answer == _run(a) == _run(b) == pair.counterfactual.answer  # the real answer stays
        # every line keeps its shape (a constant stays a constant, a copy a copy): tokens align
        assert [line[-1].isdigit() for line in a.split("\n")[:-1]] == [line[-1].isdigit() for line in b.split("\n")[:-1]]
    assert [p.to_dict() for p in pairs] == [p.to_dict() for p in make_pairs(kind, 25, 12, 7, hops=hops)]


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


# Pinned from main at 3b3d213, before the task interface: the same seeds must keep giving these pairs.
PINNED_TEXTS = {
    "root_value": ("v = 8\nf = 6\nw = 9\nm = 2\no = f\nh = v\n#h: ", "v = 6\nf = 6\nw = 9\nm = 2\no = f\nh = v\n#h: ", 4),
    "query_chain": ("w = 7\nm = w\ny = 3\np = 4\nb = m\nd = 7\n#y: ", "w = 7\nm = w\ny = 3\np = 4\nb = m\nd = 7\n#p: ", 37),
    "distractor_value": ("v = 8\nf = 6\nw = 9\nm = 2\no = f\nh = v\n#h: ", "v = 8\nf = 4\nw = 9\nm = 2\no = f\nh = v\n#h: ", 10),
    "chain_link": ("w = 7\nu = w\nx = 0\ng = x\nm = u\nn = 8\n#m: ", "w = 7\nu = w\nx = 0\ng = x\nm = x\nn = 8\n#m: ", 28),
}
PINNED_HOPS = {"root_value": 2, "query_chain": 1, "distractor_value": 2, "chain_link": 3}
PINNED_DIGESTS = {  # sha256 of 20 whole pairs (programs with spans and meta) at seq_len=8, seed=1
    ("root_value", 2, False): "c23b687f9af069d54495d0cac6eaa6f6d11ed53ad525df52864787d13bd00808",
    ("query_chain", 1, True): "5f53ce5ff84bdc11cb8e42d112b2d2a9186fde9f7f6a45175553344b8ba12e9a",
    # changed on purpose (issue 9 item 12): the 8th pair's new distractor digit was the answer's, now redrawn
    ("distractor_value", 2, False): "5f92b10dfde943778471828d2f78168943f402d8a6e3037815fdf4c79308e840",
    ("chain_link", 3, True): "745490853b656418a64a90dbccc3ecb4a861d0d927f8689455630ccae01dc32b",
}


@pytest.mark.parametrize("kind", sorted(PINNED_TEXTS))
def test_binding_pairs_match_the_texts_pinned_before_the_task_interface(kind):
    first = make_pairs(kind, 3, 6, 5, hops=PINNED_HOPS[kind])[0]
    assert (first.original.text, first.counterfactual.text, first.changed_at) == PINNED_TEXTS[kind]


@pytest.mark.parametrize("key", sorted(PINNED_DIGESTS))
def test_binding_pairs_are_byte_identical_to_main(key):
    import dataclasses
    import hashlib
    import json

    kind, hops, rebinding = key
    pairs = [dataclasses.asdict(p) for p in make_pairs(kind, 20, 8, 1, hops=hops, rebinding=rebinding)]
    for pair in pairs:  # the chain lines' newline spans (`chain<k>_end`) and the line map came later: the rest is pinned
        assert pair.pop("line_map") is None  # single-character edits move no line
        for program in (pair["original"], pair["counterfactual"]):
            ends = {role for role in program["spans"] if role.endswith("_end")}
            assert ends == {f"chain{k}_end" for k in range(1, program["meta"]["hops"] + 1)}
            assert all(program["text"][program["spans"][role][0]] == "\n" for role in ends)
            program["spans"] = {role: span for role, span in program["spans"].items() if role not in ends}
    text = json.dumps(pairs, sort_keys=True)
    assert hashlib.sha256(text.encode()).hexdigest() == PINNED_DIGESTS[key]


COUNTER_ITEMS = re.compile(r"items = \[(.*)\]")


@pytest.mark.parametrize("kind", ["item_value", "distractor_item", "target_value"])
def test_counter_pairs_edit_one_digit_with_python_answers(kind):
    pairs = make_pairs(kind, 20, 6, 3, task="counter")
    assert len(pairs) == 20
    for pair in pairs:
        a, b = pair.original.text, pair.counterfactual.text
        assert [i for i in range(len(a)) if a[i] != b[i]] == [pair.changed_at]
        assert pair.original.answer == _run(a) and pair.counterfactual.answer == _run(b)
        items = [int(x) for x in COUNTER_ITEMS.match(a).group(1).split(", ")]
        target = int(re.search(r"if v == (\d+):", a).group(1))
        assert pair.original.answer == items.count(target)
        first_line = a.split("\n")[0]
        if kind == "target_value":
            assert a[pair.changed_at] == str(target) and a.index("if v == ") < pair.changed_at
        else:
            # the edited character is a list item on the first line: matching the target or not
            index = [m.start() for m in re.finditer(r"\d", first_line)].index(pair.changed_at)
            assert (items[index] == target) == (kind == "item_value")
            assert index == next(i for i, x in enumerate(items) if (x == target) == (kind == "item_value"))
        if kind == "distractor_item":
            assert pair.counterfactual.answer == pair.original.answer  # the control
        else:
            assert pair.counterfactual.answer != pair.original.answer


def test_counter_pairs_are_seeded_and_counter_takes_no_binding_kind():
    first = make_pairs("item_value", 5, 5, 1, task="counter")
    assert [p.to_dict() for p in first] == [p.to_dict() for p in make_pairs("item_value", 5, 5, 1, task="counter")]
    with pytest.raises(TaskError, match="unknown counterfactual 'root_value'"):
        make_pairs("root_value", 1, 5, 0, task="counter")
    with pytest.raises(TaskError, match="cannot be patched"):
        make_pairs("root_value", 1, 5, 0, task="loop")
