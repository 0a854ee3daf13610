"""Training data: disjoint splits, held-out combinations, balanced hops, a reproducible stream."""

import ast
import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest

from bindexp.tasks.binding import analyse_binding
from bindexp.training.data import DataError, DataSpec, ProgramData, Supervision, heldout_pairs, supervised_example

ROOT = Path(__file__).resolve().parents[2]
SPEC = DataSpec(seq_len=6, hops=(1, 2, 3), spacing="compact", n_eval=40, longer_seq_lens=(9,))


@pytest.fixture(scope="module")
def data():
    return ProgramData(SPEC)


def _sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _assignments(text):
    """(letter, digit) of every constant line, parsed here independently of the code under test."""
    return {(m[0], m[1]) for m in re.findall(r"^([a-z]) ?= ?(\d)$", text, flags=re.MULTILINE)}


def test_heldout_pairs_are_a_seeded_tenth_of_all_letter_digit_pairs():
    pairs = heldout_pairs(0.1, data_seed=0)
    assert len(pairs) == 26  # 10% of 26 letters x 10 digits
    assert all(len(v) == 1 and v.isalpha() and len(d) == 1 and d.isdigit() for v, d in pairs)
    assert heldout_pairs(0.1, 0) == pairs and heldout_pairs(0.1, 1) != pairs
    assert heldout_pairs(0.0, 0) == frozenset()


def test_evaluation_sets_are_pairwise_disjoint_and_of_the_asked_shape(data):
    names = set(data.eval_sets)
    assert names == {"validation", "test", "heldout", "longer_len9", "more_hops4"}
    hashes = [_sha(p.text) for ps in data.eval_sets.values() for p in ps]
    assert len(hashes) == len(set(hashes)) == 5 * 40
    assert {p.seq_len for p in data.eval_sets["longer_len9"]} == {9}
    assert {p.meta["hops"] for p in data.eval_sets["more_hops4"]} == {4}
    assert Counter(p.meta["hops"] for p in data.eval_sets["validation"]) == {1: 14, 2: 13, 3: 13}


def test_training_stream_never_contains_an_evaluation_program(data):
    eval_hashes = {_sha(p.text) for ps in data.eval_sets.values() for p in ps}
    train = [data.train_example(k).text for k in range(2000)]
    assert not {_sha(t[: t.rindex(" ") + 1]) for t in train} & eval_hashes


def test_a_small_program_space_still_keeps_evaluation_programs_out_of_training():
    # 1-line programs: 26 letters x 10 digits, minus held-out pairs -> collisions are certain
    small = ProgramData(DataSpec(seq_len=1, hops=(1,), spacing="compact", n_eval=20))
    eval_texts = {p.text for ps in small.eval_sets.values() for p in ps}
    train = {small.train_program(k).text for k in range(600)}
    assert not train & eval_texts
    assert len(train) + len(eval_texts) <= 260


def test_heldout_combinations_never_appear_in_training(data):
    for k in range(2000):
        text = data.train_example(k).text
        assert not _assignments(text[: text.rindex("#")]) & data.heldout, text
    for program in data.eval_sets["heldout"]:
        root_line = program.text.splitlines()[program.meta["chain_lines"][0]]
        assert (root_line[0], root_line[-1]) in data.heldout
    for name in ("validation", "test", "longer_len9", "more_hops4"):
        assert all(not _assignments(p.text) & data.heldout for p in data.eval_sets[name])


def test_training_programs_are_correct_and_hops_balanced(data):
    texts = [e.text for e in data.train_examples(step=3, batch_size=30)]
    assert texts == [data.train_example(3 * 30 + r).text for r in range(30)]
    hops = Counter()
    for text in texts:
        program_text, answer = text[: text.rindex(" ") + 1], text[text.rindex(" ") + 1:]
        program = analyse_binding(program_text)
        assert str(program.answer) == answer and program.seq_len == 6
        hops[program.meta["hops"]] += 1
    assert hops == {1: 10, 2: 10, 3: 10}


def test_the_stream_is_a_pure_function_of_the_settings():
    a, b = ProgramData(SPEC), ProgramData(SPEC)
    assert [a.train_example(k).text for k in (500, 3, 77)] == [b.train_example(k).text for k in (500, 3, 77)]
    other = ProgramData(DataSpec(**{**SPEC.__dict__, "data_seed": 1}))
    assert [other.train_example(k).text for k in range(5)] != [a.train_example(k).text for k in range(5)]


def test_a_finite_pool_is_visited_once_per_epoch_in_a_new_order():
    pool = ProgramData(DataSpec(seq_len=4, hops=(1, 2), spacing="compact", n_eval=5, train_programs=50))
    first = [pool.train_example(k).text for k in range(50)]
    second = [pool.train_example(k).text for k in range(50, 100)]
    assert len(set(first)) == 50 and set(first) == set(second) and first != second


SUPERVISED = DataSpec(**{**SPEC.__dict__, "supervision": Supervision(queries_per_program=4, line_targets=True,
                                                                      relabel=True)})


def test_supervision_never_changes_the_evaluation_sets(data):
    supervised = ProgramData(SUPERVISED)
    assert {n: [p.text for p in ps] for n, ps in supervised.eval_sets.items()} == \
           {n: [p.text for p in ps] for n, ps in data.eval_sets.items()}
    for programs in supervised.eval_sets.values():  # the standard format: one query, ending the text
        assert all(p.text.count("#") == 1 and p.text.endswith(f"#{p.query_var}: ") for p in programs)


def test_supervised_examples_carry_python_answers_and_stay_out_of_evaluation():
    supervised = ProgramData(SUPERVISED)
    eval_texts = {p.text for ps in supervised.eval_sets.values() for p in ps}
    for k in range(400):
        example = supervised.train_example(k)
        program_text = example.text[: example.text.index("#")]
        program_text += example.text[len(program_text):].split("\n")[0][:4]  # "#x: "
        assert program_text not in eval_texts
        assert not _assignments(program_text) & supervised.heldout
        # every target, read off the text, is what Python computes (run here, not by bindexp)
        namespace = {}
        exec(program_text[: program_text.index("#")], {}, namespace)  # noqa: S102 - generated programs
        queries = re.findall(r"#([a-z]): (\d)", example.text)
        assert len(queries) == 4 and len({q for q, _ in queries}) == 4
        assert all(namespace[name] == int(value) for name, value in queries)
        lines = program_text.splitlines()[:-1]
        line_targets = [t for t in example.targets if example.text[t[0]] == "\n" and t[0] < len(program_text)]
        assert len(line_targets) == len(lines) == 6
        assert [namespace[line[0]] for line in lines] == [int(v) for _, v in line_targets]
        assert example.targets[0] == (len(program_text) - 1, queries[0][1])


def test_relabelling_renames_letters_and_digits_consistently():
    plain = ProgramData(SPEC)
    relabelled = ProgramData(DataSpec(**{**SPEC.__dict__, "supervision": Supervision(relabel=True)}))
    changed = 0
    for k in range(200):
        a, b = plain.train_program(k), relabelled.train_program(k)
        letters = dict(zip(re.findall("[a-z]", a.text), re.findall("[a-z]", b.text)))
        digits = dict(zip(re.findall("[0-9]", a.text), re.findall("[0-9]", b.text)))
        assert len(set(letters.values())) == len(letters) and len(set(digits.values())) == len(digits)  # bijections
        assert b.meta["hops"] == a.meta["hops"] and b.answer == int(digits[str(a.answer)])
        changed += a.text != b.text
    assert changed > 190


def test_one_query_and_no_line_targets_is_the_plain_program_and_answer():
    program = analyse_binding("a=3\nb=a\nc=5\n#b: ")
    example = supervised_example(program, Supervision(), rng=None)
    assert example.text == "a=3\nb=a\nc=5\n#b: 3" and example.targets == ((15, "3"),)  # the space of "#b: "


def test_impossible_data_is_refused_in_one_line():
    with pytest.raises(DataError, match="hops must be distinct"):
        ProgramData(DataSpec(hops=(1, 1)))
    with pytest.raises(Exception, match="cannot exceed seq_len"):
        ProgramData(DataSpec(seq_len=2, hops=(3,)))


def test_training_package_imports_only_lower_layers():
    allowed = {"errors", "vocab", "stats", "tasks", "models", "io", "training"}  # io: checkpoints
    for path in (ROOT / "bindexp" / "training").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bindexp."):
                assert node.module.split(".")[1] in allowed, f"{path.name} imports {node.module}"
    data_imports = [n.module for n in ast.walk(ast.parse((ROOT / "bindexp/training/data.py").read_text()))
                    if isinstance(n, ast.ImportFrom)]
    assert not [m for m in data_imports if m and m.split(".")[0] in {"torch", "transformers", "wandb"}]
