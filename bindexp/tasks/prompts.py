"""Prompts (raw, instruction templates, k-shot, chat) and answer parsers."""

from __future__ import annotations

import re
from typing import Any, Sequence

from bindexp.tasks.program import Program, TaskError

CODE = "{code}"
_TEMPLATES: dict[str, str] = {
    "raw": CODE,
    "instruction": (
        "Each program below assigns values to variables. The comment on its last line names a "
        "variable; write that variable's value after the colon.\n\n" + CODE
    ),
}


def register_template(name: str, template: str) -> None:
    """Register a prompt template; `{code}` marks where the examples and the program go."""
    if template.count(CODE) != 1:
        raise TaskError(f"template {name!r} must contain {CODE} exactly once")
    _TEMPLATES[name] = template


def get_template(name: str) -> str:
    try:
        return _TEMPLATES[name]
    except KeyError:
        raise TaskError(f"unknown template {name!r}; known templates: {', '.join(sorted(_TEMPLATES))}") from None


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
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )


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


def parse_answer(completion: str, answer_type: type) -> int | bool | None:
    return parse_bool(completion) if answer_type is bool else parse_int(completion)
