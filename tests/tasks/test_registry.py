"""Tasks by name: user registration, seeded program sets, exclusion, and bad requests."""

from __future__ import annotations

import dataclasses
import string

import pytest

from bindexp.errors import TaskError
from bindexp.tasks import Program, get_task, make_programs, register_task, task_names

BUILTIN = [
    "arithmetic_sequence",
    "binding",
    "boolean",
    "counter",
    "exception",
    "fibonacci",
    "loop",
    "loop_unrolled",
    "varying_increments",
]


def python_value(text: str, var: str):
    namespace: dict = {}
    exec(text, namespace)  # noqa: S102 - test programs only
    return namespace[var]


def doubling(length, rng):
    """A user generator: a start digit doubled `length` times; the answer by formula."""
    start = rng.randint(0, 9)
    return f"a = {start}\n" + "a = a * 2\n" * length + "#a: ", start * 2**length


def test_builtin_tasks():
    assert task_names() == BUILTIN


# --------------------------------------------------------------------------------------------
# Registering a task
# --------------------------------------------------------------------------------------------


def test_register_text_and_answer(clean_registry):
    spec = register_task("doubling", doubling)
    assert "doubling" in task_names() and get_task("doubling") is spec
    programs = make_programs("doubling", 30, 4, 0)
    assert len(programs) == 30 and len({p.text for p in programs}) > 1
    for p in programs:
        assert p.task == "doubling" and p.seq_len == 4 and p.seed == 0 and p.query_var == "a"
        assert p.answer == python_value(p.text, "a")
        assert p.text.count("a * 2") == 4
        assert p.span_text("final") == " "
    assert make_programs("doubling", 30, 4, 0) == programs


def test_register_with_metadata(clean_registry):
    def with_meta(length, rng):
        text, answer = doubling(length, rng)
        return text, answer, {"start": int(text.split("\n")[0].split(" = ")[1])}

    register_task("doubling_meta", with_meta, candidates=None, answer_type=int)
    for p in make_programs("doubling_meta", 20, 3, 1):
        assert p.meta["start"] * 8 == p.answer == python_value(p.text, "a")


def test_register_bool_task(clean_registry):
    def parity(length, rng):
        n = rng.randint(0, 99)
        return f"n = {n}\neven = n % 2 == 0\n#even: ", n % 2 == 0

    spec = register_task("parity", parity, candidates=("True", "False"), answer_type=bool)
    assert spec.candidates == ("True", "False") and spec.answer_type is bool
    for p in make_programs("parity", 20, 1, 2):
        assert p.answer is python_value(p.text, "even")
        assert p.answer_text in spec.candidates


def test_wrong_stated_answer_raises(clean_registry):
    def off_by_one(length, rng):
        text, answer = doubling(length, rng)
        return text, answer + 1

    register_task("off_by_one", off_by_one)
    with pytest.raises(TaskError) as err:
        make_programs("off_by_one", 1, 2, 0)
    assert "\n" not in str(err.value)


def test_missing_query_comment_raises(clean_registry):
    register_task("no_query", lambda length, rng: ("a = 1\n", 1))
    with pytest.raises(TaskError) as err:
        make_programs("no_query", 1, 1, 0)
    assert "\n" not in str(err.value)


def test_verify_off_trusts_the_generator(clean_registry):
    register_task("unchecked", lambda length, rng: ("a = 1\n#a: ", 2), verify=False)
    assert make_programs("unchecked", 1, 1, 0)[0].answer == 2


def test_registered_task_takes_no_options(clean_registry):
    register_task("doubling", doubling)
    with pytest.raises(TaskError):
        make_programs("doubling", 1, 2, 0, hops=2)


def test_generator_may_return_a_program(clean_registry):
    def whole(length, rng):
        return Program(task="whole", text="b = 3\n#b: ", answer=3, query_var="b", seq_len=length)

    register_task("whole", whole)
    (p,) = make_programs("whole", 1, 1, 9)
    assert p.answer == 3 and p.seed == 9


# --------------------------------------------------------------------------------------------
# Program sets
# --------------------------------------------------------------------------------------------


def test_candidates_and_answer_types():
    for task in BUILTIN:
        spec = get_task(task)
        for p in make_programs(task, 20, 4, 0):
            assert type(p.answer) is spec.answer_type
            assert spec.candidates is None or p.answer_text in spec.candidates
    assert get_task("binding").candidates == tuple(string.digits)
    assert set(get_task("boolean").candidates) == {"True", "False"}


@pytest.mark.parametrize("task", BUILTIN)
def test_deterministic(task):
    options = {"hops": 2, "rebinding": True, "spacing": "compact"} if task == "binding" else {}
    first = make_programs(task, 20, 6, 11, **options)
    assert make_programs(task, 20, 6, 11, **options) == first
    assert make_programs(task, 20, 6, 11, **dict(reversed(options.items()))) == first
    assert all(p.seed == 11 for p in first)
    # a larger set starts with the smaller one
    assert make_programs(task, 30, 6, 11, **options)[:20] == first
    other_seed = make_programs(task, 20, 6, 12, **options)
    assert [p.text for p in other_seed] != [p.text for p in first]
    shots = make_programs(task, 20, 6, 11, stream="shots", **options)
    assert [p.text for p in shots] != [p.text for p in first]


@pytest.mark.parametrize("task", BUILTIN)
def test_lengths_are_independent_draws(task):
    """The program at length L+1 is a fresh draw, not the one at length L with a line added."""
    for length in (3, 6):
        prefixed = 0
        for seed in range(150):
            short = make_programs(task, 1, length, seed)[0]
            long = make_programs(task, 1, length + 1, seed)[0]
            prefixed += long.text.startswith(short.code)
        assert prefixed <= 3, (task, length, prefixed)


def test_seeds_give_different_programs():
    texts = [make_programs("binding", 1, 10, seed)[0].text for seed in range(100)]
    assert len(set(texts)) == 100


def test_exclude_is_never_returned():
    # seq_len 1 leaves only 26 letters x 10 digits programs, so draws collide often
    pool = make_programs("binding", 200, 1, 0)
    exclude = {p.text for p in pool[::2]}
    assert len(exclude) > 20
    for seed in range(5):
        programs = make_programs("binding", 200, 1, seed, exclude=exclude)
        assert len(programs) == 200
        assert not {p.text for p in programs} & exclude


def test_excluding_everything_raises():
    every = {f"{v} = {d}\n#{v}: " for v in string.ascii_lowercase for d in string.digits}
    assert {p.text for p in make_programs("binding", 500, 1, 0)} <= every
    with pytest.raises(TaskError) as err:
        make_programs("binding", 1, 1, 0, exclude=every)
    assert "\n" not in str(err.value)
    keep = {f"q = {d}\n#q: " for d in string.digits}
    for p in make_programs("binding", 5, 1, 0, exclude=every - keep):
        assert p.text in keep and p.answer == int(p.text[4])


def test_zero_programs():
    assert make_programs("loop", 0, 5, 0) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda: make_programs("no_such_task", 1, 5, 0),
        lambda: get_task("no_such_task"),
        lambda: make_programs("binding", -1, 5, 0),
        lambda: make_programs("loop", -1, 5, 0),
        lambda: make_programs("binding", 1, 5, 0, hop=2),  # unknown option
        lambda: make_programs("binding", 1, 5, 0, depth=2),
        lambda: make_programs("loop", 1, 5, 0, hops=2),  # task takes no options
        lambda: make_programs("boolean", 1, 5, 0, spacing="compact"),
    ],
    ids=["unknown-task", "get-unknown-task", "negative-n", "negative-n-loop", "unknown-option",
         "unknown-option-2", "options-to-loop", "options-to-boolean"],
)
def test_bad_requests_raise(call):
    with pytest.raises(TaskError) as err:
        call()
    message = str(err.value)
    assert message and "\n" not in message


def test_written_out_defaults_draw_the_same_programs():
    from bindexp.tasks import BindingOptions

    defaults = {f: getattr(BindingOptions(), f) for f in ("hops", "distractor_chains", "max_distractor_depth",
                                                           "rebinding", "rebinding_prob", "spacing")}
    plain = [p.text for p in make_programs("binding", 5, 8, 3)]
    assert plain == [p.text for p in make_programs("binding", 5, 8, 3, hops=1)]
    assert plain == [p.text for p in make_programs("binding", 5, 8, 3, **defaults)]


@pytest.mark.parametrize("task", task_names())
def test_a_program_survives_to_dict_json_from_dict(task):
    import json

    for program in make_programs(task, 3, 5, seed=1):
        back = Program.from_dict(json.loads(json.dumps(program.to_dict())))
        assert back == program and all(isinstance(span, tuple) for span in back.spans.values())


def test_a_registered_task_becomes_patchable_through_its_declaration():
    from bindexp.tasks.counterfactuals import make_pairs
    from bindexp.tasks.interface import CounterfactualKind
    from bindexp.tasks.registry import patchable_tasks
    from bindexp.vocab import DIGITS

    def mine(length, rng):
        value = rng.randint(0, 9)
        return f"x = {value}\n#x: ", value

    def reanalyse(program, text):
        return dataclasses.replace(program, text=text, answer=int(text[4]))

    edit = CounterfactualKind("value", lambda p, rng: (4, str((int(p.text[4]) + 1) % 10)), changes_answer=True)
    register_task("mine_patchable", mine, counterfactuals={"value": edit}, reanalyse=reanalyse,
                  pair_candidates=DIGITS, role_columns=lambda programs: ["value", "final"])
    assert "mine_patchable" in patchable_tasks() and "loop" not in patchable_tasks()
    pairs = make_pairs("value", 3, 1, 0, task="mine_patchable")
    assert [(p.original.answer + 1) % 10 for p in pairs] == [p.counterfactual.answer for p in pairs]
    assert all(p.changed_at == 4 and p.original.text[:4] == "x = " for p in pairs)
