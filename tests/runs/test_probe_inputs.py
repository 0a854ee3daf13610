"""Bad input through the real command lines: each row runs a script as a user would and expects a
non-zero exit, exactly one `error:` line on stderr, no traceback, and nothing written (no run
folder, no W&B directory, no file a payload would create) when the input is refused up front.

Add a row for a new bad input: (name, argv, setup, says). argv starts with the script's file name;
`{tmp}` is the row's temporary folder (the working directory, `--output_dir={tmp}/out`); `setup`
(or None) gets that folder and writes what the row needs; `says` must appear in the error line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

pytestmark = pytest.mark.cli  # the command-line tier: scripts run as a user runs them

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["--model=tiny-random-llama", "--wandb_mode=disabled", "--output_dir={tmp}/out", "--progress=False"]
PATCH = ["patch.py", *COMMON, "--seq_len=5", "--hops=2", "--num_programs=2", "--only_correct=False"]
EVAL = ["eval.py", *COMMON, "--num_programs=4"]
FILE = "--programs_file={tmp}/programs.jsonl"
MARKER = "ran"  # a file the payloads below would create


class Probe(NamedTuple):
    name: str
    argv: list[str]
    setup: Callable[[Path], None] | None
    says: str


# ---- programs files ------------------------------------------------------------------------

def _lines(shots: int = 0, **options) -> list[dict]:
    """Lines as scripts/find_robust.py writes them, for generated programs (no model needed)."""
    from bindexp.jobs.robust import RobustSettings, _line
    from bindexp.tasks import make_programs

    settings = RobustSettings(models=["tiny-random-llama"], hops=[2], seq_len=[5], shots=shots, **options)
    programs = make_programs("binding", 4, 5, 0, hops=2, **settings.task_options())
    return [_line(settings, 2, i, p, {}) for i, p in enumerate(programs)]


def _write(tmp: Path, lines: list, text: str | None = None) -> None:
    body = "".join(json.dumps(line) + "\n" for line in lines) if text is None else text
    (tmp / "programs.jsonl").write_text(body)


def _payload(tmp: Path, code: str, task: str = "binding") -> None:
    """A file whose first program carries `code`; the rest of the line is a real program's, so an
    unchecked loader would select it for a hops=2, seq_len=5 run (and query_chain would run it)."""
    lines = _lines()
    line = {**lines[0], "task": task, "program": f"a = 1\n{code}\n#a: ", "answer": 1, "answer_text": "1",
            "query_var": "a", "hops": None if task != "binding" else 2}
    _write(tmp, [line, *lines[1:]])


ESCAPE = ("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
          ".__init__.__globals__['system']('touch " + MARKER + "')")


def _off_by_one(tmp: Path) -> None:
    _write(tmp, [{**line, "answer": (line["answer"] + 1) % 10, "answer_text": str((line["answer"] + 1) % 10)}
                 for line in _lines()])


def _moved_span(tmp: Path) -> None:
    lines = _lines()
    lines[1]["spans"]["root_value"] = [0, 1]
    _write(tmp, lines)


def _missing_key(tmp: Path) -> None:
    lines = _lines()
    del lines[2]["program"]
    _write(tmp, lines)


def _wrong_type(tmp: Path) -> None:
    lines = _lines()
    lines[1]["seq_len"] = "5"
    _write(tmp, lines)


def _truncated(tmp: Path) -> None:
    text = "".join(json.dumps(line) + "\n" for line in _lines())
    _write(tmp, [], text[:-30])


def _spacing_mismatch(tmp: Path) -> None:
    """Spaced programs (`a = 3`) in lines that say they are compact (`a=3`)."""
    _write(tmp, [{**line, "options": {**line["options"], "spacing": "compact"}} for line in _lines()])


PROBES = [
    # issue 9 item 1: program text from a file never runs unchecked
    Probe("escape through __subclasses__ (query_chain runs the lines)", [*PATCH, FILE, "--counterfactual=query_chain"],
          lambda tmp: _payload(tmp, ESCAPE), "programs.jsonl:1: program line 2"),
    Probe("escape in a non-binding line", [*PATCH, FILE], lambda tmp: _payload(tmp, ESCAPE, task="loop"),
          "programs.jsonl:1: program line 2: "),
    Probe("import in a line", [*PATCH, FILE, "--counterfactual=query_chain"],
          lambda tmp: _payload(tmp, f"import os\nb = os.system('touch {MARKER}')"), "programs.jsonl:1: program line 2"),
    Probe("open() in a non-binding line", [*PATCH, FILE], lambda tmp: _payload(tmp, f"b = open('{MARKER}', 'w')", "loop"),
          "programs.jsonl:1: program line 2: calling open"),
    # item 2: labels are recomputed
    Probe("answers off by one", [*PATCH, FILE], _off_by_one, "programs.jsonl:1: answer is"),
    Probe("a span moved", [*PATCH, FILE], _moved_span, "programs.jsonl:2: span 'root_value'"),
    # item 3: the file's prompt settings; a given setting that differs is refused
    Probe("shots given differ from the file's", [*PATCH, FILE, "--shots=3"], lambda tmp: _write(tmp, _lines(shots=0)),
          "shots=3 (file: 0)"),
    Probe("a chat file for patch", [*PATCH, FILE], lambda tmp: _write(tmp, _lines(chat=True)), "chat=True"),
    # item 4: malformed files
    Probe("missing file", [*PATCH, FILE], None, "does not exist"),
    Probe("a directory", [*PATCH, FILE], lambda tmp: (tmp / "programs.jsonl").mkdir(), "is a directory"),
    Probe("empty file", [*PATCH, FILE], lambda tmp: _write(tmp, [], ""), "programs.jsonl: empty"),
    Probe("not JSON", [*PATCH, FILE], lambda tmp: _write(tmp, [], "a = 1\n#a: \n"), "programs.jsonl:1: not JSON"),
    Probe("truncated last line", [*PATCH, FILE], _truncated, "programs.jsonl:4: truncated"),
    Probe("missing key", [*PATCH, FILE], _missing_key, "programs.jsonl:3: missing key 'program'"),
    Probe("a JSON list per line", [*PATCH, FILE], lambda tmp: _write(tmp, [[1, 2]]), "programs.jsonl:1: expected a JSON object"),
    Probe("a whole-file JSON list", [*PATCH, FILE], lambda tmp: _write(tmp, [], json.dumps(_lines(), indent=1)),
          "programs.jsonl:1: not JSON"),
    Probe("a wrong type", [*PATCH, FILE], _wrong_type, "programs.jsonl:2: 'seq_len' must be an integer"),
    # item 18: systematic_only where no program can qualify
    Probe("systematic_only at seq_len=1", [*EVAL, "--systematic_only=True", "--seq_len=1"], None,
          "seq_len=1, hops=1"),
    Probe("systematic_only at seq_len=4 hops=3", [*EVAL, "--systematic_only=True", "--seq_len=4", "--hops=3"], None,
          "seq_len=4, hops=3"),
    # issue 22: a setting a job does not use is refused, not recorded and ignored
    Probe("eval --task=loop --hops=[3]", [*EVAL, "--task=loop", "--hops=[3]"], None, "task 'loop' does not use hops"),
    Probe("eval --task=counter --rebinding=True", [*EVAL, "--task=counter", "--rebinding=True"], None,
          "task 'counter' does not use rebinding"),
    Probe("patch --task=counter --hops=2", ["patch.py", *COMMON, "--task=counter", "--counterfactual=item_value",
                                            "--hops=2", "--num_programs=2"], None, "task 'counter' does not use hops"),
    Probe("lens --positions=all", ["lens.py", *COMMON, "--positions=all"], None, "unrecognized arguments: --positions"),
    Probe("attention --positions=all", ["attention.py", *COMMON, "--positions=all"], None,
          "unrecognized arguments: --positions"),
    Probe("subspace --positions=all", ["subspace.py", *COMMON, "--positions=all"], None,
          "unrecognized arguments: --positions"),
    Probe("lens --method=knockout", ["lens.py", *COMMON, "--method=knockout"], None, "unrecognized arguments: --method"),
    Probe("locate a control kind", ["locate.py", *COMMON, "--seq_len=5", "--hops=2", "--num_programs=2",
                                    "--only_correct=False", "--counterfactuals=[distractor_value]"], None,
          "counterfactual 'distractor_value' is a control"),
    Probe("a file's spacing against its programs", [*PATCH, FILE], _spacing_mismatch,
          "programs.jsonl:1: options spacing is 'compact' but program line 1 is"),
    # issue 22: run names are names, never paths
    Probe("eval --run_name=../../x", [*EVAL, "--run_name=../../x"], None, "is not a plain name"),
    Probe("patch --run_name=<absolute>", [*PATCH, "--run_name={tmp}/x"], None, "is not a plain name"),
    # issue 22: bench scripts on bad input
    Probe("bench_eval --seq_len=0", ["bench_eval.py", "--model=tiny-random-llama", "--seq_len=0"], None,
          "argument --seq_len: must be at least 1"),
    Probe("bench_patch an unknown model", ["bench_patch.py", "--model=/nonexistent"], None, "unknown model"),
    Probe("bench_eval --hops=9", ["bench_eval.py", "--model=tiny-random-llama", "--hops=9", "--num_programs=2"], None,
          "hops must be between 1 and 4"),
    Probe("bench_analyses --layer=99", ["bench_analyses.py", "--model=tiny-random-llama", "--layer=99", "--programs=2",
                                        "--seq_len=5", "--shots=0", "--das_steps=1"], None, "--layer=99"),
]


# One interpreter runs every row (importing torch once per row would take minutes): each script's
# `main(argv)` in the row's folder, stdout and stderr captured, and anything escaping `main` printed
# as the traceback Python would print. test_the_batch_runs_like_the_real_command_line checks one row
# both ways.
_BATCH = """
import contextlib, importlib.util, io, json, os, sys, traceback
results = []
for row in json.load(sys.stdin):
    os.chdir(row["cwd"])
    spec = importlib.util.spec_from_file_location("probe_script", row["script"])
    module = importlib.util.module_from_spec(spec)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            spec.loader.exec_module(module)
            rc = module.main(row["argv"]) or 0
        except SystemExit as exit:
            rc = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
            rc = 1
    results.append({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
print("PROBE-RESULTS " + json.dumps(results))
"""


def _argv(probe: Probe, tmp: Path) -> tuple[str, list[str]]:
    script, *args = [arg.replace("{tmp}", str(tmp)) for arg in probe.argv]
    return str(ROOT / "scripts" / script), args


def run_probes(probes, tmp_path_factory, snapshot: Callable[[Path], Any]) -> dict[str, tuple[Path, Any, dict]]:
    """Every probe's folder (its setup done), `snapshot(folder)` taken before the run, and the run's
    rc, stdout and stderr, all rows run in one interpreter (`_BATCH`)."""
    rows, folders = [], {}
    for probe in probes:
        tmp = tmp_path_factory.mktemp("probe")
        if probe.setup is not None:
            probe.setup(tmp)
        folders[probe.name] = (tmp, snapshot(tmp))
        script, args = _argv(probe, tmp)
        rows.append({"script": script, "argv": args, "cwd": str(tmp)})
    done = subprocess.run([sys.executable, "-c", _BATCH], input=json.dumps(rows), capture_output=True, text=True,
                          timeout=600)
    found = [x for x in done.stdout.splitlines() if x.startswith("PROBE-RESULTS ")]
    assert len(found) == 1, done.stderr
    results = json.loads(found[0].removeprefix("PROBE-RESULTS "))
    return {probe.name: (*folders[probe.name], result) for probe, result in zip(probes, results)}


def assert_one_error_line(rc: int, stderr: str, says: str) -> None:
    """A refusal's shape: a non-zero exit, no traceback, exactly one `error:` line, saying `says`."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert rc != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert len(errors) == 1 and says in errors[0], stderr


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Path, set[str], dict]]:
    """Every probe's folder, the names in it before the run, and the run's rc, stdout and stderr."""
    return run_probes(PROBES, tmp_path_factory, lambda tmp: {p.name for p in tmp.iterdir()})


def _check(probe: Probe, tmp: Path, before: set[str], rc: int, stderr: str) -> None:
    assert_one_error_line(rc, stderr, probe.says)
    assert {p.name for p in tmp.iterdir()} == before, "the run wrote something"
    assert not (tmp / MARKER).exists()


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_bad_input_is_one_error_line_and_writes_nothing(probe, outcomes):
    tmp, before, result = outcomes[probe.name]
    _check(probe, tmp, before, result["rc"], result["stderr"])


def test_the_batch_runs_like_the_real_command_line(tmp_path):
    probe = PROBES[0]
    probe.setup(tmp_path)
    before = {p.name for p in tmp_path.iterdir()}
    script, args = _argv(probe, tmp_path)
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    _check(probe, tmp_path, before, out.returncode, out.stderr)
