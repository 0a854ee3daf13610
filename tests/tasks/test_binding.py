"""Binding programs: labels, chains, spans and heuristics against an independent reading.

Every expectation here is computed by this file's own resolver (`read_binding`) and by running the
program text with Python's `exec`, never taken from bindexp's own analysis.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bindexp.errors import TaskError
from bindexp.tasks import BindingOptions, analyse_binding, binding_program, make_programs, render_binding

LETTERS = string.ascii_lowercase
FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --------------------------------------------------------------------------------------------
# An independent reading of binding programs
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Reading:
    query: str
    assigns: list[tuple[str, str]]  # (lhs, rhs) per body line
    starts: list[int]  # character offset of each line, query line last
    chain: list[int]  # 0-based line numbers, root first
    value: int  # the root constant
    parent: list[int | None]  # the line each copy reads from, None for constants


def read_binding(text: str) -> Reading:
    """Parse `x = y` lines and walk back from the query with Python's sequential semantics."""
    *body, query = text.split("\n")
    assert query.startswith("#") and query.endswith(": "), query
    q = query[1:-2]
    assigns = []
    for line in body:
        lhs, rhs = line.split("=")
        assigns.append((lhs.strip(), rhs.strip()))
    starts, pos = [], 0
    for line in [*body, query]:
        starts.append(pos)
        pos += len(line) + 1

    def last_assignment(var: str, before: int) -> int:
        return max(k for k in range(before) if assigns[k][0] == var)

    parent = [None if rhs.isdigit() else last_assignment(rhs, i) for i, (_, rhs) in enumerate(assigns)]
    chain, var, before = [], q, len(assigns)
    while True:
        line = last_assignment(var, before)
        chain.insert(0, line)
        rhs = assigns[line][1]
        if rhs.isdigit():
            break
        var, before = rhs, line
    return Reading(q, assigns, starts, chain, int(assigns[chain[0]][1]), parent)


def python_value(text: str, var: str):
    namespace: dict = {}
    exec(text, namespace)  # noqa: S102 - test programs only
    return namespace[var]


def tree_depths(r: Reading) -> dict[int, int]:
    """Root line -> depth (lines on the longest path) of every distractor tree."""
    root_of: dict[int, int] = {}
    depth: dict[int, int] = {}
    for i, p in enumerate(r.parent):
        root_of[i] = i if p is None else root_of[p]
        depth[i] = 1 if p is None else depth[p] + 1
    trees: dict[int, int] = {}
    for i in range(len(r.assigns)):
        if root_of[i] != r.chain[0]:
            trees[root_of[i]] = max(trees.get(root_of[i], 0), depth[i])
    return trees


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset)


def check_against_reading(p, r: Reading) -> None:
    """Everything `analyse_binding` promises for any program, checked against our own reading."""
    text = p.text
    assert p.query_var == r.query
    assert p.answer == python_value(text, r.query) == r.value
    assert p.meta["hops"] == len(r.chain)
    assert p.meta["chain_lines"] == r.chain
    assert p.meta["distractor_lines"] == [i for i in range(len(r.assigns)) if i not in r.chain]
    seen: set[str] = set()
    rebound = []
    for i, (lhs, _) in enumerate(r.assigns):
        if lhs in seen:
            rebound.append(i)
        seen.add(lhs)
    assert p.meta["rebound_lines"] == rebound

    # chain spans: one character each, on the right line, at the letter / digit they name
    for depth, i in enumerate(r.chain, 1):
        s, e = p.spans[f"chain{depth}_lhs"]
        assert e - s == 1 and s == r.starts[i] and line_of(text, s) == i
        assert text[s:e] == r.assigns[i][0]
        s, e = p.spans[f"chain{depth}_rhs"]
        assert e - s == 1 and line_of(text, s) == i and text[e] == "\n"
        assert text[s:e] == r.assigns[i][1]
    hops = len(r.chain)
    assert f"chain{hops + 1}_lhs" not in p.spans and f"chain{hops + 1}_rhs" not in p.spans
    assert p.span_text("chain1_rhs") == str(p.answer)
    assert p.spans["root_value"] == p.spans["chain1_rhs"]
    for depth in range(1, hops):
        assert p.span_text(f"chain{depth + 1}_rhs") == p.span_text(f"chain{depth}_lhs")
    assert p.span_text(f"chain{hops}_lhs") == r.query
    assert p.span_text("query_var") == r.query and p.spans["query_var"][0] == r.starts[-1] + 1
    assert p.spans["final"] == (len(text) - 1, len(text)) and text[-1] == " "

    # distractor spans: the constants of every non-chain constant line, in line order
    expected = [i for i, (_, rhs) in enumerate(r.assigns) if rhs.isdigit() and i != r.chain[0]]
    roles = sorted((k for k in p.spans if k.startswith("distractor")), key=lambda k: int(re.findall(r"\d+", k)[0]))
    assert roles == [f"distractor{j}_value" for j in range(1, len(expected) + 1)]
    for role, i in zip(roles, expected):
        s, e = p.spans[role]
        assert line_of(text, s) == i and i not in r.chain
        assert text[s:e] == r.assigns[i][1] and text[s:e].isdigit() and text[e] == "\n"
    assert sorted(tree_depths(r).values()) == p.meta["distractor_depths"]

    # heuristic labels from our own reading of lines 1 and 2
    firsts = [int(rhs) if rhs.isdigit() else None for _, rhs in r.assigns[:2]]
    line1 = firsts[0]
    line2 = firsts[1] if len(firsts) > 1 else None
    assert p.meta["line1_value"] == line1 and p.meta["line2_value"] == line2
    assert p.meta["heuristic_line1"] == (line1 == r.value)
    assert p.meta["heuristic_line2"] == (line2 == r.value)
    assert p.meta["heuristic"] == (r.value in (line1, line2))


def check_generated(p, *, seq_len: int, hops: int, **options) -> None:
    """A generated program: the reading above plus what the request promises."""
    opts = BindingOptions(hops=hops, **options)
    r = read_binding(p.text)
    check_against_reading(p, r)
    assert p.task == "binding" and p.seq_len == seq_len and len(r.assigns) == seq_len
    assert len(r.chain) == hops
    assert 0 <= p.answer <= 9 and type(p.answer) is int

    line = r"[a-z] = [a-z0-9]" if opts.spacing == "spaced" else r"[a-z]=[a-z0-9]"
    assert all(re.fullmatch(line, text) for text in p.text.split("\n")[:-1])

    depths = p.meta["distractor_depths"]
    assert sum(depths) + hops == seq_len
    assert max(depths, default=0) <= opts.max_distractor_depth
    if opts.distractor_chains is not None:
        assert len(depths) == opts.distractor_chains == len(tree_depths(r))
    # generated chains are simple paths: no line is read by two later lines before being rebound
    children = [0] * seq_len
    for parent in r.parent:
        if parent is not None:
            children[parent] += 1
    assert max(children) <= 1
    if not opts.rebinding:
        assert len({lhs for lhs, _ in r.assigns}) == seq_len


# --------------------------------------------------------------------------------------------
# Hand-computed examples
# --------------------------------------------------------------------------------------------


def test_docstring_example():
    p = analyse_binding("k = 2\nj = k\nt = 8\n#j: ")
    assert p.answer == 2 and p.query_var == "j"
    assert p.meta["hops"] == 2 and p.meta["chain_lines"] == [0, 1]
    assert p.meta["distractor_depths"] == [1]
    assert p.span_text("chain1_rhs") == "2" and p.span_text("chain2_lhs") == "j"
    assert p.span_text("distractor1_value") == "8"
    assert p.meta["heuristic_line1"] and not p.meta["heuristic_line2"]


@pytest.mark.parametrize(
    ("text", "answer", "chain"),
    [
        ("a = 1\nb = a\na = 5\nc = a\n#b: ", 1, [0, 1]),  # rebinding a does not change b
        ("a = 1\nb = a\na = 5\nc = a\n#c: ", 5, [2, 3]),
        ("a = 3\na = a\n#a: ", 3, [0, 1]),  # a self-copy is one more hop
        ("a = 4\n#a: ", 4, [0]),
    ],
)
def test_sequential_semantics(text, answer, chain):
    p = analyse_binding(text)
    assert p.answer == answer and p.meta["chain_lines"] == chain and p.meta["hops"] == len(chain)
    check_against_reading(p, read_binding(text))


@pytest.mark.parametrize(
    "text",
    ["a = 1\n#b: ", "b = a\n#b: ", "a = 10\n#a: ", "a = 1\n#a:", "a = 1\n", "a == 1\n#a: "],
)
def test_analyse_rejects_malformed_programs(text):
    with pytest.raises(TaskError) as err:
        analyse_binding(text)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# Thousands of generated programs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hops", [1, 2, 3, 4])
def test_every_length_and_rebinding(hops):
    for seq_len in range(1, 41):
        for rebinding in (False, True):
            if seq_len < hops or (not rebinding and seq_len > len(LETTERS)):
                with pytest.raises(TaskError):
                    make_programs("binding", 1, seq_len, 0, hops=hops, rebinding=rebinding)
                continue
            programs = make_programs("binding", 8, seq_len, seq_len, hops=hops, rebinding=rebinding)
            assert len(programs) == 8
            for p in programs:
                check_generated(p, seq_len=seq_len, hops=hops, rebinding=rebinding)


@st.composite
def binding_requests(draw):
    hops = draw(st.integers(1, 4))
    rebinding = draw(st.booleans())
    seq_len = draw(st.integers(hops, 40 if rebinding else len(LETTERS)))
    max_depth = draw(st.integers(1, 5))
    spare = seq_len - hops
    chains = draw(st.none() | st.integers(math.ceil(spare / max_depth), spare))
    options = {
        "distractor_chains": chains,
        "max_distractor_depth": max_depth,
        "rebinding": rebinding,
        "rebinding_prob": draw(st.floats(0.0, 1.0)),
        "spacing": draw(st.sampled_from(["spaced", "compact"])),
    }
    return seq_len, hops, draw(st.integers(0, 2**32)), options


@FAST
@given(binding_requests())
def test_any_feasible_request(request):
    seq_len, hops, seed, options = request
    for p in make_programs("binding", 5, seq_len, seed, hops=hops, **options):
        check_generated(p, seq_len=seq_len, hops=hops, **options)


@pytest.mark.parametrize("k", [0, 1, 3, 6])
def test_exact_number_of_distractor_chains(k):
    for seq_len in range(1 + k, 1 + 3 * k + 1):
        for p in make_programs("binding", 20, seq_len, k, distractor_chains=k):
            check_generated(p, seq_len=seq_len, hops=1, distractor_chains=k)


@pytest.mark.parametrize("max_depth", [1, 2, 5])
def test_max_distractor_depth(max_depth):
    programs = make_programs("binding", 100, 20, 1, hops=2, max_distractor_depth=max_depth)
    for p in programs:
        check_generated(p, seq_len=20, hops=2, max_distractor_depth=max_depth)
    # the cap is reached, not just respected
    assert max(max(p.meta["distractor_depths"]) for p in programs) == max_depth


def test_compact_spacing():
    for p in make_programs("binding", 50, 10, 3, hops=3, spacing="compact"):
        assert " = " not in p.text
        assert all(re.fullmatch(r"[a-z]=[a-z0-9]", line) for line in p.code.splitlines())
        check_generated(p, seq_len=10, hops=3, spacing="compact")


@pytest.mark.parametrize("hops", [1, 2, 3, 4])
def test_rebinding_at_forty_lines(hops):
    programs = make_programs("binding", 60, 40, hops, hops=hops, rebinding=True)
    for p in programs:
        check_generated(p, seq_len=40, hops=hops, rebinding=True)
        lhs = [line.split(" = ")[0] for line in p.code.splitlines()]
        # 40 assignments to at most 26 letters: at least 14 of them assign a letter again
        assert len(lhs) - len(set(lhs)) >= 40 - len(LETTERS)


def test_rebinding_is_used_when_not_forced():
    on = make_programs("binding", 200, 20, 5, hops=2, rebinding=True)
    off = make_programs("binding", 200, 20, 5, hops=2, rebinding=True, rebinding_prob=0.0)

    def rebound(p):
        lhs = [line.split(" = ")[0] for line in p.code.splitlines()]
        return len(lhs) - len(set(lhs))

    assert sum(map(rebound, on)) / len(on) > 1
    assert sum(map(rebound, off)) == 0
    for p in on:
        check_generated(p, seq_len=20, hops=2, rebinding=True)


def test_default_depths_cover_the_range():
    programs = make_programs("binding", 300, 16, 0)
    seen = {d for p in programs for d in p.meta["distractor_depths"]}
    assert seen == {1, 2, 3}


# --------------------------------------------------------------------------------------------
# Any hand-written program: analyse_binding follows Python's semantics
# --------------------------------------------------------------------------------------------


@st.composite
def handwritten(draw):
    lines: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(1, 30))):
        assigned = sorted({lhs for lhs, _ in lines})
        lhs = draw(st.sampled_from(LETTERS[:8]))  # few letters: plenty of rebinding and trees
        if assigned and draw(st.booleans()):
            rhs = draw(st.sampled_from(assigned))
        else:
            rhs = str(draw(st.integers(0, 9)))
        lines.append((lhs, rhs))
    query = draw(st.sampled_from(sorted({lhs for lhs, _ in lines})))
    return lines, query, draw(st.sampled_from(["spaced", "compact"]))


@FAST
@given(handwritten())
def test_analyse_any_program(program):
    lines, query, spacing = program
    text = render_binding(lines, query, spacing)
    sep = " = " if spacing == "spaced" else "="
    assert text == "".join(f"{lhs}{sep}{rhs}\n" for lhs, rhs in lines) + f"#{query}: "
    p = analyse_binding(text)
    assert p.seq_len == len(lines)
    check_against_reading(p, read_binding(text))


def test_binding_program_directly():
    rng = random.Random(0)
    for hops in range(1, 5):
        for _ in range(25):
            p = binding_program(12, rng, BindingOptions(hops=hops))
            check_generated(p, seq_len=12, hops=hops)


# --------------------------------------------------------------------------------------------
# Impossible requests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seq_len", "options"),
    [
        (3, {"hops": 4}),  # hops > seq_len
        (1, {"hops": 2}),
        (5, {"hops": 0}),
        (10, {"hops": 5}),
        (-1, {"hops": 4}),
        (0, {}),  # seq_len < 1
        (-3, {}),
        (27, {}),  # 27 distinct variables, 26 letters
        (40, {"rebinding": False}),
        (5, {"distractor_chains": -1}),
        (5, {"distractor_chains": 0}),  # 4 spare lines, no chains to hold them
        (5, {"distractor_chains": 5}),  # 5 chains need at least 5 lines
        (9, {"distractor_chains": 2, "max_distractor_depth": 3}),  # 8 lines > 2 * 3
        (5, {"max_distractor_depth": 0}),
        (5, {"spacing": "tabs"}),
        (5, {"rebinding": True, "rebinding_prob": 1.5}),
    ],
)
def test_impossible_requests_raise(seq_len, options):
    with pytest.raises(TaskError) as err:
        make_programs("binding", 1, seq_len, 0, **options)
    message = str(err.value)
    assert message and "\n" not in message
    with pytest.raises(TaskError):
        binding_program(seq_len, random.Random(0), BindingOptions(**options))
    with pytest.raises(TaskError):  # checked before anything is drawn
        make_programs("binding", 0, seq_len, 0, **options)
