"""Prompts (raw, instruction, minimal and step-by-step templates, k-shot, chat) and answer parsers.

A template is text with `{code}` where the worked examples and the program go. Most templates end
with the program, so the answer is the next token and can be scored from one forward. A template
with text after `{code}` (e.g. `step_by_step`) asks the model to reason first: its answers are
generated and the *final* answer is parsed (`Answer: 7`, else the last value in the completion).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from bindexp.errors import TaskError
from bindexp.tasks.program import Program

CODE = "{code}"
PARSE_RULES = ("first", "final")


@dataclasses.dataclass(frozen=True)
class Template:
    """A prompt template and how its answers are read.

    answer_next: the answer is the token right after the prompt (scorable from one forward, patchable).
    parse: "first" value in a generated completion, or the "final" answer (`Answer: x`, else the last value).
    max_new_tokens: the least generation budget the template needs (reasoning takes room).
    """

    text: str
    answer_next: bool = True
    parse: str = "first"
    max_new_tokens: int = 8


_TEMPLATES: dict[str, Template] = {
    "raw": Template(CODE),
    "instruction": Template(
        "Each program below assigns values to variables. The comment on its last line names a "
        "variable; write that variable's value after the colon.\n\n" + CODE
    ),
    "minimal": Template("Give the value only.\n" + CODE),
    "step_by_step": Template(
        "Trace the program below line by line, writing each variable's value as it changes. "
        "Then give the value the last comment asks for on a final line of the form 'Answer: <value>'.\n\n"
        + CODE + "\nLet's trace it step by step.\n",
        answer_next=False, parse="final", max_new_tokens=256,
    ),
}


def register_template(name: str, template: str, *, answer_next: bool | None = None, parse: str = "first",
                      max_new_tokens: int = 8) -> None:
    """Register a prompt template; `{code}` marks where the examples and the program go.

    answer_next defaults to whether the template ends with `{code}` (nothing between the program's
    query and the answer); otherwise answers are generated and read by `parse` ("first" or "final").
    """
    if template.count(CODE) != 1:
        raise TaskError(f"template {name!r} must contain {CODE} exactly once")
    if parse not in PARSE_RULES:
        raise TaskError(f"parse must be one of {PARSE_RULES}, got {parse!r}")
    follows = template.endswith(CODE) if answer_next is None else answer_next
    _TEMPLATES[name] = Template(template, follows, parse, max_new_tokens)


def template_spec(name: str) -> Template:
    try:
        return _TEMPLATES[name]
    except KeyError:
        raise TaskError(f"unknown template {name!r}; known templates: {', '.join(sorted(_TEMPLATES))}") from None


def get_template(name: str) -> str:
    """The template's text (raises TaskError for an unknown name)."""
    return template_spec(name).text


def require_answer_next(name: str) -> None:
    """Refuse a template whose answer is not the next token (patching reads the next token's logits)."""
    if not template_spec(name).answer_next:
        raise TaskError(f"template {name!r} asks for reasoning before the answer; interventions read the "
                        "answer from the next token: use raw, instruction or minimal")


def template_names() -> list[str]:
    return sorted(_TEMPLATES)


def worked_example(program: Program) -> str:
    """A solved program as it appears among few-shot examples."""
    return f"{program.text}{program.answer_text}\n\n"


def build_prompt(program: Program, shots: Sequence[Program] = (), template: str = "raw") -> str:
    """The text given to the model: the template around the worked examples and the program.

    The program is always last, so the answer is the next token and the program's character
    spans shift by `len(prompt) - len(program.text)`.
    """
    if any(shot.text == program.text for shot in shots):
        raise TaskError("a few-shot example must never be the test program itself")
    code = "".join(worked_example(shot) for shot in shots) + program.text
    return get_template(template).replace(CODE, code)


def program_offset(prompt: str, program: Program) -> int:
    """Where `program.text` starts inside `prompt` (it always ends the raw prompt)."""
    at = prompt.rfind(program.text)
    if at < 0:
        raise TaskError("program text not found in prompt")
    return at


def render_chat(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """Wrap `prompt` as a user turn in the tokenizer's chat template, ready for the reply.

    Thinking is turned off for templates that read `enable_thinking` (Qwen3); others ignore it.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise TaskError("this tokenizer has no chat template; run without chat=True")
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
    except Exception as err:  # noqa: BLE001 - the template is the model's code: jinja's sandbox refusals, its own raises
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise TaskError(f"the tokenizer's chat template failed ({type(err).__name__}: {first}); "
                        "run without chat=True or fix the template") from None


_INT = re.compile(r"-?\d+")
_BOOL = re.compile(r"\b(true|false)\b", re.IGNORECASE)


def parse_int(completion: str) -> int | None:
    """The first integer in a completion (`' 7\\n#b: 3'` -> 7), or None if there is none."""
    match = _INT.search(completion)
    return int(match.group()) if match else None


def parse_bool(completion: str) -> bool | None:
    """The first True/False (any case) in a completion, or None if there is none."""
    match = _BOOL.search(completion)
    return match.group().lower() == "true" if match else None


_FINAL = re.compile(r"answer\s*[:=]\s*(-?\d+|true|false)", re.IGNORECASE)


def parse_final(completion: str, answer_type: type) -> int | bool | None:
    """The final answer of a reasoned completion: the last `Answer: x`, else the last value in it.

    `'a = 3\nb = 4\nAnswer: 4'` -> 4; `'a is 3, so b is 5'` -> 5.
    """
    marked = _FINAL.findall(completion)
    if marked:
        return parse_answer(marked[-1], answer_type)
    found = (_BOOL if answer_type is bool else _INT).findall(completion)
    return parse_answer(found[-1], answer_type) if found else None


def parse_answer(completion: str, answer_type: type, rule: str = "first") -> int | bool | None:
    """The answer in a generated completion: the first value, or (rule="final") the final answer."""
    if rule == "final":
        return parse_final(completion, answer_type)
    return parse_bool(completion) if answer_type is bool else parse_int(completion)
