"""Prompts (raw, instruction, k-shot, chat) and the answer parsers."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bindexp.errors import TaskError
from bindexp.tasks import (
    Program,
    build_prompt,
    make_programs,
    parse_answer,
    parse_bool,
    parse_int,
    register_template,
    render_chat,
    template_names,
)
from bindexp.tasks.prompts import get_template, program_offset

FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None)


def program_and_shots(task: str, k: int, seq_len: int = 6, seed: int = 0, **options):
    (program,) = make_programs(task, 1, seq_len, seed, **options)
    shots = make_programs(task, k, seq_len, seed, stream="shots", exclude={program.text}, **options)
    return program, shots


def check_prompt(prompt: str, program: Program, shots: list[Program], before: str = "", after: str = ""):
    """Template text, then each shot solved, in order, then the program, then the template's tail."""
    assert prompt.startswith(before) and prompt.endswith(program.text + after)
    at = len(before)
    for shot in shots:
        solved = shot.text + str(shot.answer)
        found = prompt.index(solved, at)
        assert found == at, "shots follow each other with nothing but blank lines between"
        at = found + len(solved)
        assert prompt[at : at + 2] == "\n\n"
        at += 2
    assert prompt[at:] == program.text + after
    offset = program_offset(prompt, program)
    assert offset == at
    for role in program.spans:  # spans shift by the program's offset
        start, end = program.spans[role]
        assert prompt[offset + start : offset + end] == program.span_text(role)


@pytest.mark.parametrize("task", ["binding", "loop", "boolean", "counter"])
@pytest.mark.parametrize("k", [0, 1, 3, 8])
def test_raw_k_shot(task, k):
    program, shots = program_and_shots(task, k)
    assert len(shots) == k and all(shot.text != program.text for shot in shots)
    prompt = build_prompt(program, shots)
    check_prompt(prompt, program, shots)
    if k == 0:
        assert prompt == program.text


@pytest.mark.parametrize("k", [0, 2, 5])
def test_instruction_k_shot(k):
    program, shots = program_and_shots("binding", k, hops=2)
    template = get_template("instruction")
    head, tail = template.split("{code}")
    prompt = build_prompt(program, shots, template="instruction")
    check_prompt(prompt, program, shots, before=head, after=tail)
    assert head.strip()  # the instruction is really there


def test_shots_at_seq_len_one_never_repeat_the_program():
    # at seq_len 1 there are only 260 binding programs, so unexcluded shots would collide
    for seed in range(30):
        program, shots = program_and_shots("binding", 8, seq_len=1, seed=seed)
        assert program.text not in {shot.text for shot in shots}
        check_prompt(build_prompt(program, shots), program, shots)


def test_shot_equal_to_program_raises():
    program, shots = program_and_shots("binding", 3)
    with pytest.raises(TaskError) as err:
        build_prompt(program, [*shots, program])
    assert "\n" not in str(err.value)


def test_unknown_template_raises():
    program, _ = program_and_shots("binding", 0)
    with pytest.raises(TaskError):
        build_prompt(program, template="no_such_template")


@pytest.mark.parametrize("template", ["no code here", "{code} and {code}", "{ code }", "{Code}"])
def test_template_needs_code_once(clean_templates, template):
    with pytest.raises(TaskError) as err:
        register_template("bad", template)
    assert "\n" not in str(err.value)
    assert "bad" not in template_names()


def test_other_braces_do_not_break(clean_templates):
    template = "Config {'a': 1} and {x} and {}\n{code}\nAnswer in {braces}."
    register_template("braces", template)
    assert "braces" in template_names()
    # programs that hold braces themselves, even the text {code}
    program = Program(
        task="dicts", text='d = {"{code}": 4, "b": {}}\nx = d["{code}"]\n#x: ', answer=4, query_var="x", seq_len=2
    )
    shot = Program(task="dicts", text="e = {'k': 7}\ny = e['k']\n#y: ", answer=7, query_var="y", seq_len=2)
    prompt = build_prompt(program, [shot], template="braces")
    head, tail = template.split("{code}")
    check_prompt(prompt, program, [shot], before=head, after=tail)
    assert prompt.count("{code}") == 2  # the two in the program, none from the template


# --------------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "value"),
    [
        (" 7\n#b: 3", 7),
        ("x = 10", 10),
        ("-3", -3),
        ("7", 7),
        (" 42 is the answer, not 41", 42),
        ("", None),
        ("no digits here", None),
        ("\n#a: ", None),
    ],
)
def test_parse_int(completion, value):
    assert parse_int(completion) == value
    assert parse_answer(completion, int) == value


NON_DIGITS = st.text(alphabet=[c for c in string.printable if not c.isdigit() and c != "-"])


@FAST
@given(prefix=NON_DIGITS, value=st.integers(-10**6, 10**6), suffix=st.text(alphabet=string.printable))
def test_parse_int_takes_the_first_integer(prefix, value, suffix):
    assert parse_int(prefix + str(value) + " " + suffix) == value


@FAST
@given(NON_DIGITS)
def test_parse_int_without_digits(text):
    assert parse_int(text) is None


@pytest.mark.parametrize(
    ("completion", "value"),
    [
        ("True", True),
        (" false", False),
        ("FALSE\n#a: True", False),
        (" true.", True),
        ("none", None),
        ("", None),
        ("Trueish", None),
        ("1", None),
    ],
)
def test_parse_bool(completion, value):
    assert parse_bool(completion) is value
    assert parse_answer(completion, bool) is value


# --------------------------------------------------------------------------------------------
# Chat templates, with a real tokenizer built offline
# --------------------------------------------------------------------------------------------

PLAIN_CHAT = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
THINKING_CHAT = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


def char_tokenizer(chat_template: str | None):
    """A character-level PreTrainedTokenizerFast, no network needed."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{c: i for i, c in enumerate(string.printable, 1)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="module")
def binding_prompt():
    program, shots = program_and_shots("binding", 2)
    return build_prompt(program, shots, template="instruction")


def test_render_chat(binding_prompt):
    tokenizer = char_tokenizer(PLAIN_CHAT)
    assert len(tokenizer("a = 3\n")["input_ids"]) == 6  # really one token per character
    chat = render_chat(tokenizer, binding_prompt)
    assert chat == f"<user>{binding_prompt}</user><assistant>"
    chat = render_chat(tokenizer, binding_prompt, system="You trace code.")
    assert chat == f"<system>You trace code.</system><user>{binding_prompt}</user><assistant>"


def test_render_chat_turns_thinking_off(binding_prompt):
    chat = render_chat(char_tokenizer(THINKING_CHAT), binding_prompt)
    assert chat == f"<user>{binding_prompt}</user><assistant><think>\n\n</think>\n\n"


def test_render_chat_needs_a_template(binding_prompt):
    with pytest.raises(TaskError) as err:
        render_chat(char_tokenizer(None), binding_prompt)
    assert "\n" not in str(err.value)
    with pytest.raises(TaskError):
        render_chat(object(), binding_prompt)
