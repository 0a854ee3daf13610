"""Running program text: only the syntax bindexp's own generators emit is ever executed."""

from __future__ import annotations

import pytest

from bindexp.errors import TaskError
from bindexp.tasks import make_programs, register_task, task_names
from bindexp.tasks.program import check_program_syntax, execute_query, run_program

# A program whose second line escapes restricted builtins through object.__subclasses__() and runs
# a shell command: what a crafted programs file did before programs were checked.
ESCAPE = ("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
          ".__init__.__globals__['system']('touch {marker}')")

# (name, program text with {marker}, the program line that must be named); each would create
# {marker} if Python ran it with its ordinary builtins.
PAYLOADS = [
    ("subclasses escape", "a = 1\n" + ESCAPE + "\n#a: ", 2),
    ("import", "a = 1\nimport os\nb = os.system('touch {marker}')\n#a: ", 2),
    ("__import__", "a = __import__('os').system('touch {marker}')\n#a: ", 1),
    ("open", "a = 1\nb = open('{marker}', 'w')\n#a: ", 2),
    ("getattr", "a = 1\nb = 2\nc = getattr(__import__('os'), 'system')('touch {marker}')\n#a: ", 3),
    ("lambda", "f = lambda: open('{marker}', 'w')\na = f()\n#a: ", 1),
    ("def", "a = 1\ndef f():\n    open('{marker}', 'w')\nb = f()\n#a: ", 2),
    ("attribute of a constant", "a = ''.join(['x'])\nb = open('{marker}', 'w')\n#a: ", 1),
    ("dunder name", "a = 1\n__builtins__ = 2\nb = open('{marker}', 'w')\n#a: ", 2),
    ("with", "a = 1\nwith open('{marker}', 'w') as f:\n    a = 2\n#a: ", 2),
    ("attribute in a loop", "a = 1\nfor i in range(2):\n    a = a.bit_length()\nb = open('{marker}', 'w')\n#a: ", 3),
]


@pytest.mark.parametrize("name, text, line", PAYLOADS, ids=[p[0] for p in PAYLOADS])
def test_unsafe_programs_are_refused_before_anything_runs(name, text, line, tmp_path):
    marker = tmp_path / "ran"
    program = text.format(marker=marker)
    with pytest.raises(TaskError) as err:
        run_program(program)
    assert not marker.exists(), f"{name}: the program ran"
    assert str(err.value).startswith(f"line {line}:") and "\n" not in str(err.value)
    with pytest.raises(TaskError):
        execute_query(program, "a")
    assert not marker.exists()


def test_the_escape_is_live_without_the_check(tmp_path):
    """Restricted builtins alone (what run_program relied on) do not stop the escape payload."""
    marker = tmp_path / "ran"
    exec(ESCAPE.format(marker=marker), {"__builtins__": {"range": range, "len": len}})  # noqa: S102
    assert marker.exists()


@pytest.mark.parametrize("text, line, says", [
    ("while True:\n    a = 1\n", 1, "while loop"),
    ("a = 1\nfor i in range(3):\n    for j in range(3):\n        a += 1\n", 3, "loop inside a loop"),
    ("a = 1\nfor i in range(5000):\n    a += 1\n", 2, "iterations"),
    ("a = 2\nfor i in range(100):\n    a = a * a\n", 3, "multiplying two variables"),
    ("a = 9 ** 9 ** 9\n", 1, "Pow"),
    ("a = 1 << 100000000\n", 1, "LShift"),
    ("a = 'text'\n", 1, "constant"),
    ("a = 10000000000\n", 1, "constant"),
    ("items = [1, 2]\nitems = items + items\n", 2, "list"),
    ("items = [1, 2]\nb = items[0:1]\n", 2, "slice"),
    ("a = 1\nb = a[0]\n", 2, "indexing anything but a list"),
    ("try:\n    a = 1\nexcept Exception:\n    a = 2\n", 3, "except"),
    ("a = 1\nx = range(3)\n", 2, "range"),
    ("a = 1\nglobal b\n", 2, "global"),
    ("a = 1\ndel a\n", 2, "del"),
    ("a = 1\na\n", 2, "bare expression"),
    ("a = (\n", 1, "not valid Python"),
    ("a = 1 +" + " 1 +" * 100 + " 1\n", 1, "nested"),
    ("a = {'x': 1}\n", 1, "Dict"),
    ("print = 1\n", 1, "'print'"),
])
def test_other_constructs_are_refused_with_their_line(text, line, says):
    with pytest.raises(TaskError) as err:
        check_program_syntax(text)
    message = str(err.value)
    assert message.startswith(f"line {line}:") and says in message, message


def test_a_failing_program_is_a_task_error_with_its_line():
    with pytest.raises(TaskError, match="^line 2: .*ZeroDivisionError"):
        run_program("a = 1\nb = a // 0\n")
    with pytest.raises(TaskError, match="^line 1: .*NameError"):
        run_program("a = b\n")
    assert run_program("a = 5\ntry:\n    a = a // 0\nexcept ZeroDivisionError:\n    a = a + 1\n") == {"a": 6}


@pytest.mark.parametrize("task", task_names())
def test_every_generator_emits_only_accepted_syntax(task):
    """The whitelist is not too strict: many seeds and lengths of every built-in task pass (and
    make_programs would raise if any did not, since every label comes from run_program)."""
    lengths = range(1, 9) if task != "binding" else range(4, 15, 2)
    for seq_len in lengths:
        for seed in range(3):
            if task == "binding":
                for options in ({"hops": 1}, {"hops": 3, "rebinding": True}, {"hops": 2, "spacing": "compact"},
                                {"hops": 4, "distractor_chains": 0}):
                    if options.get("distractor_chains") == 0 and seq_len != 4:
                        continue
                    for program in make_programs(task, 30, seq_len, seed, **options):
                        check_program_syntax(program.text)
            else:
                for program in make_programs(task, 30, seq_len, seed):
                    check_program_syntax(program.text)


def test_a_registered_generator_is_checked_too(clean_registry, tmp_path):
    marker = tmp_path / "ran"
    register_task("sneaky", lambda length, rng: (f"a = 1\nb = open('{marker}', 'w')\n#a: ", 1))
    with pytest.raises(TaskError, match="line 2: calling open"):
        make_programs("sneaky", 1, 1, 0)
    assert not marker.exists()
    register_task("doubling", lambda length, rng: ("a = 3\n" + "a = a * 2\n" * length + "#a: ", 3 * 2**length))
    assert make_programs("doubling", 1, 4, 0)[0].answer == 48
