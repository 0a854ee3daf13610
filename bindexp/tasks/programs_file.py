"""Reading a programs file (JSON Lines, as `scripts/find_robust.py` writes) without trusting it.

Nothing a file states is believed: every program is parsed (by its task's analyser where it has
one, `TaskSpec.analyse`, else by the syntax whitelist of `check_program_syntax`) before any of it runs, and every answer,
span and fact is recomputed; a line that disagrees rejects the whole file, naming `file:line`.
What the file contributes is which programs to use, in which order, and the prompt settings they
were found with (`PromptSettings`). Every problem is a TaskError of one line. Pure Python.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bindexp.errors import TaskError
from bindexp.tasks.program import Program, execute_query
from bindexp.tasks.registry import get_task

MAX_PROGRAM_CHARS = 10_000  # far above any generated program; bounds the work one line can ask for
MAX_SHOTS = 100  # a file cannot ask a run to draw (and prompt with) more few-shot examples than this
# key -> (accepted types, how a message names them); bool is never an int here
_REQUIRED: dict[str, tuple[tuple[type, ...], str]] = {
    "task": ((str,), "a string"),
    "hops": ((int, type(None)), "an integer or null"),
    "seq_len": ((int,), "an integer"),
    "seed": ((int,), "an integer"),
    "program": ((str,), "a string"),
    "answer": ((int, bool), "an integer or true/false"),
    "query_var": ((str,), "a string"),
    "shots": ((int,), "an integer"),
    "template": ((str,), "a string"),
    "chat": ((bool,), "true or false"),
    "options": ((dict,), "an object"),
}
_OPTIONAL: dict[str, tuple[tuple[type, ...], str]] = {
    "answer_text": ((str,), "a string"),
    "spans": ((dict,), "an object"),
    "meta": ((dict,), "an object"),
    "index": ((int,), "an integer"),
}

@dataclasses.dataclass(frozen=True)
class PromptSettings:
    """The prompt a file's programs were checked with: few-shot count, template, seed, chat, task options."""

    shots: int
    template: str
    seed: int
    chat: bool
    options: dict[str, Any]

    def as_settings(self) -> dict[str, Any]:
        """Setting name -> value, as the run settings call them."""
        return {"shots": self.shots, "template": self.template, "seed": self.seed, "chat": self.chat, **self.options}


@dataclasses.dataclass(frozen=True)
class ProgramsFile:
    """A checked programs file: its programs in file order, the hops each was listed under, the
    file's line number of each, and the prompt settings shared by all lines."""

    path: Path
    programs: list[Program]
    hops: list[int | None]
    line_numbers: list[int]
    prompt: PromptSettings

    def select(self, hops: int | None = None, seq_len: int | None = None) -> list[Program]:
        """The programs of one hops and/or seq_len, in file order."""
        return [p for p, h in zip(self.programs, self.hops)
                if (hops is None or h == hops) and (seq_len is None or p.seq_len == seq_len)]


def read_programs_file(path: str | Path) -> ProgramsFile:
    """Read and check every line of a programs file; raise TaskError naming `file:line` on the first problem."""
    path = Path(path)
    programs, hops, numbers = [], [], []
    prompt: PromptSettings | None = None
    for number, line in _json_lines(path):
        where = f"{path}:{number}"
        _check_types(line, where)
        program = _checked_program(line, where)
        line_prompt = _prompt(line, where)
        if prompt is None:
            prompt = line_prompt
        elif line_prompt != prompt:
            differ = next(k for k, v in line_prompt.as_settings().items() if prompt.as_settings().get(k) != v)
            raise TaskError(f"{where}: {differ}={line_prompt.as_settings()[differ]!r} differs from the first line's "
                            f"{prompt.as_settings().get(differ)!r}; a programs file holds programs found with one "
                            "prompt")
        programs.append(program)
        hops.append(line["hops"])
        numbers.append(number)
    assert prompt is not None  # _json_lines refuses a file without lines
    return ProgramsFile(path, programs, hops, numbers, prompt)


def _json_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.exists():
        raise TaskError(f"programs_file {path} does not exist")
    if path.is_dir():
        raise TaskError(f"programs_file {path} is a directory, not a JSON Lines file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise TaskError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise TaskError(f"programs_file {path} cannot be read ({err.strerror})") from None
    raw = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not raw:
        raise TaskError(f"{path}: empty: expected one JSON object per line, as scripts/find_robust.py writes")
    lines = []
    for n, line in raw:
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            if n == raw[-1][0] and not text.endswith("\n"):
                raise TaskError(f"{path}:{n}: truncated: the last line is not complete JSON ({err.msg})") from None
            raise TaskError(f"{path}:{n}: not JSON ({err.msg} at column {err.colno})") from None
        except (ValueError, RecursionError) as err:  # an integer of 5000 digits, [[[[...
            raise TaskError(f"{path}:{n}: not JSON bindexp can read ({type(err).__name__})") from None
        if not isinstance(value, dict):
            raise TaskError(f"{path}:{n}: expected a JSON object (one program per line), got {_json_type(value)}")
        lines.append((n, value))
    return lines


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _check_types(line: dict[str, Any], where: str) -> None:
    missing = [key for key in _REQUIRED if key not in line]
    if missing:
        raise TaskError(f"{where}: missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
    for key, (types, name) in {**_REQUIRED, **_OPTIONAL}.items():
        if key not in line:
            continue
        value = line[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise TaskError(f"{where}: {key!r} must be {name}, got {_json_type(value)}")
    if len(line["program"]) > MAX_PROGRAM_CHARS:
        raise TaskError(f"{where}: the program has {len(line['program'])} characters; at most {MAX_PROGRAM_CHARS}")
    if line["seq_len"] < 1:
        raise TaskError(f"{where}: seq_len must be >= 1, got {line['seq_len']}")
    if not 0 <= line["shots"] <= MAX_SHOTS:
        raise TaskError(f"{where}: shots must be between 0 and {MAX_SHOTS}, got {line['shots']}")


def _checked_program(line: dict[str, Any], where: str) -> Program:
    """The line's program, every label recomputed from its text; refuse a line that states otherwise."""
    try:
        spec = get_task(line["task"])
        program = spec.analyse(line["program"], line["seq_len"]) if spec.analyse else _generic_program(line)
    except TaskError as err:
        raise TaskError(f"{where}: program {err}") from None
    task = spec.name
    if spec.check_file_line is not None:
        try:
            spec.check_file_line(line, program)
        except TaskError as err:
            raise TaskError(f"{where}: {err}") from None
    elif line["hops"] is not None:
        raise TaskError(f"{where}: hops is {line['hops']} but {task} programs have no hops (null)")
    stated = {"query_var": line["query_var"], "answer": line["answer"]}
    if "answer_text" in line:
        stated["answer_text"] = line["answer_text"]
    for key, value in stated.items():
        computed = getattr(program, key)
        if type(value) is not type(computed) or value != computed:
            raise TaskError(f"{where}: {key} is {value!r} but the program computes {computed!r}")
    for role, span in line.get("spans", {}).items():
        if role not in program.spans or span != list(program.spans[role]):
            raise TaskError(f"{where}: span {role!r} is {span} but the program has {program.spans.get(role)}")
    meta = line.get("meta", {})
    wrong = [key for key in program.meta if key in meta and meta[key] != program.meta[key]]
    if wrong:
        raise TaskError(f"{where}: meta {wrong[0]!r} is {meta[wrong[0]]!r} but the program has "
                        f"{program.meta[wrong[0]]!r}")
    draw = meta.get("draw")  # which draw of the seeded stream: kept, it decides nothing
    return dataclasses.replace(program, seed=line["seed"],
                               meta={**program.meta, **({"draw": draw} if type(draw) is int else {})})


def _generic_program(line: dict[str, Any]) -> Program:
    """A program of a task without an analyser: the whitelist, then Python computes its answer.
    The query comment must close the text, as every task writes it. Facts the file states about
    it (meta) cannot be recomputed, so none is kept."""
    text, query_var = line["program"], line["query_var"]
    suffix = f"\n#{query_var}: "
    if not text.endswith(suffix):
        raise TaskError(f"must end with its query comment {suffix.strip()!r} and a space")
    query_at = len(text) - len(query_var) - 2
    return Program(task=line["task"], text=text, answer=execute_query(text, query_var), query_var=query_var,
                   seq_len=line["seq_len"],
                   spans={"query_var": (query_at, query_at + len(query_var)), "final": (len(text) - 1, len(text))})


def _prompt(line: dict[str, Any], where: str) -> PromptSettings:
    options = line["options"]
    spec = get_task(line["task"])
    if spec.file_options is not None:
        unknown = sorted(set(options) - set(spec.file_options))
        if unknown:
            raise TaskError(f"{where}: options has unknown key {unknown[0]!r}; {spec.name} options are "
                            f"{sorted(spec.file_options)}")
        for key, value in options.items():
            types, name = spec.file_options[key]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise TaskError(f"{where}: options {key!r} must be {name}, got {_json_type(value)}")
        axes = {axis: line[axis] for axis in spec.axes if axis != "seq_len"}  # e.g. hops
        try:
            spec.options(**options, **axes).check(line["seq_len"])
        except TaskError as err:
            raise TaskError(f"{where}: options: {err}") from None
    elif options:
        raise TaskError(f"{where}: {line['task']} programs take no options, got {sorted(options)}")
    return PromptSettings(line["shots"], line["template"], line["seed"], line["chat"], dict(options))
