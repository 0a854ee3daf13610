"""Programs files are read without trusting them: every label recomputed, every problem one line naming file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bindexp.errors import TaskError
from bindexp.jobs.robust import RobustSettings, _line
from bindexp.runs.pairs import load_robust_programs
from bindexp.tasks import make_programs
from bindexp.tasks.programs_file import PromptSettings, read_programs_file


def robust_lines(n=4, hops=2, seq_len=5, seed=0, shots=0, task="binding", **extra):
    """Lines exactly as scripts/find_robust.py writes them, for generated programs (no model needed)."""
    axes = {"hops": [hops]} if task == "binding" else {}  # a task without hops refuses --hops
    settings = RobustSettings(models=["tiny-random-llama"], task=task, seq_len=[seq_len], seed=seed, shots=shots,
                              **axes, **extra)
    options = {**settings.task_options(), "hops": hops} if task == "binding" else {}
    programs = make_programs(task, n, seq_len, seed, **options)
    return [_line(settings, hops if task == "binding" else None, i, p, {"tiny-random-llama": 1.0})
            for i, p in enumerate(programs)]


def write(path: Path, lines) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def refusal(path) -> str:
    with pytest.raises(TaskError) as err:
        read_programs_file(path)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_written_file_reads_back_as_the_generated_programs(tmp_path):
    lines = robust_lines(6, seed=3, shots=2, spacing="compact")
    path = write(tmp_path / "r.jsonl", lines)
    checked = read_programs_file(path)
    generated = make_programs("binding", 6, 5, 3, hops=2, spacing="compact", distractor_chains=None,
                              max_distractor_depth=3, rebinding=False)
    assert checked.programs == generated
    assert checked.line_numbers == [1, 2, 3, 4, 5, 6] and checked.hops == [2] * 6
    assert checked.prompt == PromptSettings(2, "raw", 3, False, {"distractor_chains": None, "max_distractor_depth": 3,
                                                                  "rebinding": False, "spacing": "compact"})
    assert load_robust_programs(path, hops=2, seq_len=5) == generated and load_robust_programs(path, hops=1) == []


def test_other_tasks_read_back_with_only_what_can_be_recomputed(tmp_path):
    lines = robust_lines(5, task="exception", seq_len=3)
    generated = make_programs("exception", 5, 3, 0)
    checked = read_programs_file(write(tmp_path / "r.jsonl", lines)).programs
    assert [(p.text, p.answer, p.query_var, p.spans, p.seq_len) for p in checked] == [
        (p.text, p.answer, p.query_var, p.spans, p.seq_len) for p in generated]
    assert all(p.meta == {"draw": g.meta["draw"]} for p, g in zip(checked, generated))  # the file's facts are not kept
    lines[1]["answer"] += 1
    assert refusal(write(tmp_path / "r.jsonl", lines)).startswith(f"{tmp_path / 'r.jsonl'}:2: answer is")


# --------------------------------------------------------------------------------------------
# Labels are recomputed (issue 9 item 2)
# --------------------------------------------------------------------------------------------


def _tamper(line, key, value):
    return {**line, key: value}


@pytest.mark.parametrize("key, change, says", [
    ("answer", lambda line: (line["answer"] + 1) % 10, "answer is"),
    ("answer_text", lambda line: str((line["answer"] + 1) % 10), "answer_text is"),
    ("answer", lambda line: str(line["answer"]), "'answer' must be"),
    ("query_var", lambda line: "z", "query_var is"),
    ("hops", lambda line: 3, "hops is 3"),
    ("seq_len", lambda line: 6, "seq_len is 6"),
    ("spans", lambda line: {**line["spans"], "root_value": [0, 1]}, "span 'root_value'"),
    ("spans", lambda line: {**line["spans"], "made_up": [0, 1]}, "span 'made_up'"),
    ("meta", lambda line: {**line["meta"], "heuristic": not line["meta"]["heuristic"]}, "meta 'heuristic'"),
    ("meta", lambda line: {**line["meta"], "chain_lines": [0]}, "meta 'chain_lines'"),
])
def test_a_wrong_label_rejects_the_file_at_its_line(tmp_path, key, change, says):
    lines = robust_lines(4)
    lines[2] = _tamper(lines[2], key, change(lines[2]))
    message = refusal(write(tmp_path / "r.jsonl", lines))
    assert message.startswith(f"{tmp_path / 'r.jsonl'}:3: ") and says in message, message


def test_answers_all_off_by_one_name_the_first_line(tmp_path):
    lines = [_tamper(line, "answer", (line["answer"] + 1) % 10) for line in robust_lines(4)]
    for line in lines:
        line["answer_text"] = str(line["answer"])
    message = refusal(write(tmp_path / "r.jsonl", lines))
    assert message.startswith(f"{tmp_path / 'r.jsonl'}:1: answer is"), message


def test_a_true_answer_is_not_the_number_one(tmp_path):
    lines = robust_lines(8, task="boolean", seq_len=2)
    line = next(line for line in lines if line["answer"] is True)
    bad = _tamper(line, "answer", 1)
    assert "answer is 1 but the program computes True" in refusal(write(tmp_path / "r.jsonl", [bad]))


# --------------------------------------------------------------------------------------------
# Unsafe programs never run (issue 9 item 1)
# --------------------------------------------------------------------------------------------

ESCAPE = ("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
          ".__init__.__globals__['system']('touch {marker}')")


@pytest.mark.parametrize("task", ["binding", "loop"])
def test_an_escape_in_a_file_is_refused_naming_file_and_line(tmp_path, task):
    marker = tmp_path / "ran"
    lines = robust_lines(3) if task == "binding" else robust_lines(3, task="loop", seq_len=2)
    text = "a = 1\n" + ESCAPE.format(marker=marker) + "\n#a: "
    lines[1] = {**lines[1], "program": text, "query_var": "a", "answer": 1, "answer_text": "1", "seq_len": 2}
    lines[1].pop("spans"), lines[1].pop("meta")
    message = refusal(write(tmp_path / "r.jsonl", lines))
    assert not marker.exists()
    assert message.startswith(f"{tmp_path / 'r.jsonl'}:2: program line 2"), message


# --------------------------------------------------------------------------------------------
# Malformed files (issue 9 item 4)
# --------------------------------------------------------------------------------------------

MALFORMED = {
    "missing": (None, "does not exist"),
    "directory": ("DIR", "is a directory"),
    "empty": ("", "empty"),
    "blank lines": ("\n  \n\n", "empty"),
    "not JSON": ("k = 2\n#k: \n", ":1: not JSON"),
    "binary": (b"\xff\xfe\x00", "not UTF-8"),
    "a JSON list per line": ("[1, 2]\n", ":1: expected a JSON object"),
    "a pretty-printed list": ('[\n  {"task": "binding"}\n]\n', ":1: not JSON"),
    "a number": ("3\n", "got a number"),
    "huge integer": ("9" * 5000 + "\n", ":1: not JSON"),
    "deep nesting": ("[" * 100000 + "\n", ":1: not JSON"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_file_is_one_line(tmp_path, name):
    content, says = MALFORMED[name]
    path = tmp_path / "r.jsonl"
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    message = refusal(path)
    assert str(path) in message and says in message, message


def test_a_truncated_last_line_is_named(tmp_path):
    text = "".join(json.dumps(line) + "\n" for line in robust_lines(3))
    path = tmp_path / "r.jsonl"
    path.write_text(text[: len(text) - 40])
    assert refusal(path).startswith(f"{path}:3: truncated")


@pytest.mark.parametrize("key", ["program", "answer", "shots", "template", "options", "hops"])
def test_a_missing_key_is_named_with_its_line(tmp_path, key):
    lines = robust_lines(3)
    del lines[1][key]
    assert refusal(write(tmp_path / "r.jsonl", lines)) == f"{tmp_path / 'r.jsonl'}:2: missing key {key!r}"


@pytest.mark.parametrize("key, value, says", [
    ("seq_len", "5", "'seq_len' must be an integer, got a string"),
    ("seq_len", True, "'seq_len' must be an integer, got true/false"),
    ("seq_len", 0, "seq_len must be >= 1"),
    ("shots", -1, "shots must be between 0 and 100"),
    ("shots", 10**9, "shots must be between 0 and 100"),
    ("program", 7, "'program' must be a string"),
    ("program", "a = 1\n" * 5000 + "#a: ", "at most 10000"),
    ("chat", "no", "'chat' must be true or false"),
    ("options", [], "'options' must be an object"),
    ("options", {"spacing": 3}, "options 'spacing' must be a string"),
    ("options", {"max_distractor_depth": 0}, "max_distractor_depth must be at least 1"),
    ("options", {"colour": "red"}, "unknown key 'colour'"),
    ("spans", [], "'spans' must be an object"),
    ("task", "no_such_task", "unknown task"),
    ("task", "loop", "hops is 2 but loop programs have no hops"),
])
def test_a_wrong_type_is_named_with_its_line(tmp_path, key, value, says):
    lines = robust_lines(3)
    lines[2][key] = value
    message = refusal(write(tmp_path / "r.jsonl", lines))
    assert message.startswith(f"{tmp_path / 'r.jsonl'}:3: ") and says in message, message


def test_lines_found_with_different_prompts_are_refused(tmp_path):
    lines = robust_lines(2) + robust_lines(2, shots=3)
    message = refusal(write(tmp_path / "r.jsonl", lines))
    assert message.startswith(f"{tmp_path / 'r.jsonl'}:3: shots=3 differs from the first line's 0"), message


# --------------------------------------------------------------------------------------------
# The file's prompt settings are the run's (issue 9 item 3)
# --------------------------------------------------------------------------------------------

PATCH = dict(model="tiny-random-llama", seq_len=5, hops=2, num_programs=2, only_correct=False, min_gap=0,
             wandb_mode="disabled", progress=False)


def test_a_patch_run_uses_the_file_prompt_settings_and_says_so(tmp_path, capsys):
    from bindexp.jobs.patch import PatchSettings, run_patch

    path = write(tmp_path / "r.jsonl", robust_lines(6, seed=2, shots=0, template="instruction", spacing="compact"))
    settings = PatchSettings(programs_file=str(path), output_dir=str(tmp_path / "out"), **PATCH)
    assert settings.shots == 3 and settings.seed == 0  # patch's own defaults differ from the file's
    outcome = run_patch(settings)
    used = json.loads((outcome.out_dir / "grid.json").read_text())["settings"]
    assert (used["shots"], used["seed"], used["template"], used["spacing"]) == (0, 2, "instruction", "compact")
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("prompt settings from")]
    assert len(said) == 1 and "shots=0" in said[0] and "seed=2" in said[0] and "template='instruction'" in said[0]


def test_given_settings_that_agree_with_the_file_are_fine(tmp_path, capsys):
    from bindexp.jobs.patch import PatchSettings
    from bindexp.runs.pairs import with_file_prompt_settings
    from bindexp.runs.settings import parse_settings

    path = write(tmp_path / "r.jsonl", robust_lines(2, seed=2, shots=1))
    given = parse_settings(PatchSettings, [f"--programs_file={path}", "--shots=1", "--seed=2"])
    used = with_file_prompt_settings(given)
    assert (used.shots, used.seed, used.template) == (1, 2, "raw")
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("argv, says", [
    (["--shots=3"], "shots=3 (file: 1)"),
    (["--seed=5", "--template=instruction"], "template='instruction' (file: 'raw'), seed=5 (file: 2)"),
    (["--spacing=compact"], "spacing='compact' (file: 'spaced')"),
])
def test_a_given_setting_that_conflicts_with_the_file_is_one_line(tmp_path, argv, says, capsys):
    from bindexp.jobs.patch import PatchSettings
    from bindexp.runs.pairs import with_file_prompt_settings
    from bindexp.runs.settings import parse_settings

    path = write(tmp_path / "r.jsonl", robust_lines(2, seed=2, shots=1))
    with pytest.raises(TaskError) as err:
        with_file_prompt_settings(parse_settings(PatchSettings, [f"--programs_file={path}", *argv]))
    assert says in str(err.value) and "\n" not in str(err.value)
    assert capsys.readouterr().err == ""


def test_an_environment_setting_counts_as_given(tmp_path, monkeypatch):
    from bindexp.jobs.patch import PatchSettings
    from bindexp.runs.pairs import with_file_prompt_settings
    from bindexp.runs.settings import parse_settings

    path = write(tmp_path / "r.jsonl", robust_lines(2, shots=1))
    monkeypatch.setenv("BINDEXP_SHOTS", "2")
    with pytest.raises(TaskError, match="shots=2"):
        with_file_prompt_settings(parse_settings(PatchSettings, [f"--programs_file={path}"]))


def test_a_chat_file_cannot_feed_a_patch_run(tmp_path):
    from bindexp.jobs.patch import PatchSettings
    from bindexp.runs.pairs import with_file_prompt_settings

    path = write(tmp_path / "r.jsonl", robust_lines(2, chat=True))
    with pytest.raises(TaskError, match="chat=True"):
        with_file_prompt_settings(PatchSettings(programs_file=str(path)))
