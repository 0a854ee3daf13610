"""Bad input to the fleet scripts (compare, sweep_local, start_agents), through the real command lines.

Same shape as tests/runs/test_probe_inputs.py: (name, argv, setup, says); argv starts with the script's
file name, `{tmp}` is the row's temporary folder (also the working directory and $HOME, so no API
key or netrc is found); `setup` (or None) writes what the row needs; `says` must appear in the one
`error:` line. Each row expects a non-zero exit, no traceback, and nothing written. These scripts
import no torch, so each row is its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

pytestmark = pytest.mark.cli  # the command-line tier: scripts run as a user runs them

ROOT = Path(__file__).resolve().parents[2]


class Probe(NamedTuple):
    name: str
    argv: list[str]
    setup: Callable[[Path], None] | None
    says: str


def _a_file(tmp: Path) -> None:
    (tmp / "file").write_text("not a folder\n")


def _sweep(tmp: Path, shots: str = "[0, 2]") -> None:
    (tmp / "sweep.yaml").write_text(textwrap.dedent(f"""
        name: probe
        program: scripts/eval.py
        method: grid
        command: [".venv/bin/python", "${{program}}", "${{args}}"]
        parameters:
          model: {{value: tiny-random-llama}}
          shots: {{values: {shots}}}
          num_programs: {{value: 2}}
    """))


def _sweep_and_file(tmp: Path) -> None:
    _sweep(tmp)
    _a_file(tmp)


def _yaml(tmp: Path, text: str) -> None:
    (tmp / "sweep.yaml").write_text(textwrap.dedent(text))


def _command(command: str) -> Callable[[Path], None]:
    """A sweep whose command (a YAML list; `{tmp}` filled in) writes the file `ran` if it runs."""
    def setup(tmp: Path) -> None:
        _yaml(tmp, f"""
            name: probe
            method: grid
            command: {command.replace("{tmp}", str(tmp))}
            parameters: {{seed: {{values: [0, 1]}}}}
        """)
    return setup


def _absolute_program(tmp: Path) -> None:
    _yaml(tmp, f"""
        name: probe
        program: {ROOT / 'scripts' / 'eval.py'}
        method: grid
        command: [".venv/bin/python", "${{program}}", "${{args}}"]
        parameters: {{model: {{value: tiny-random-llama}}, shots: {{values: [0, -2]}}}}
    """)


def _huge_grid(tmp: Path) -> None:
    values = list(range(10))
    _yaml(tmp, f"""
        name: probe
        program: scripts/eval.py
        method: grid
        command: [".venv/bin/python", "${{program}}", "${{args}}"]
        parameters: {{seed: {{values: {values}}}, num_programs: {{values: {[v + 1 for v in values]}}},
                      batch_size: {{values: {[v + 1 for v in values]}}}, max_new_tokens: {{values: {[v + 1 for v in values]}}},
                      model_seed: {{values: {values}}}}}
    """)


def _cut_state(tmp: Path) -> None:
    _sweep(tmp)
    (tmp / "o" / "probe").mkdir(parents=True)
    (tmp / "o" / "probe" / "state.json").write_text('{"[\\"--shots=0\\"]": {"status": "fini')


def _run_name_path(tmp: Path) -> None:
    _yaml(tmp, """
        name: probe
        program: scripts/eval.py
        method: grid
        command: [".venv/bin/python", "${program}", "${args}"]
        parameters: {model: {value: tiny-random-llama}, run_name: {values: [ok, ../../escaped]}}
    """)


PROBES = [
    # issue 9 item 17 (compare): checked before anything is gathered or written
    Probe("compare --source=api without an API key", ["compare.py", "--source=api", "--out={tmp}/cmp"], None,
          "needs a W&B API key"),
    Probe("compare --by=[]", ["compare.py", "--by=[]", "--runs_dir={tmp}", "--out={tmp}/cmp"], None,
          "by: Value error, needs at least one column"),
    Probe("compare --out under a file", ["compare.py", "--runs_dir={tmp}", "--out={tmp}/file/cmp"], _a_file,
          "is not a folder"),
    # item 17 (sweep_local) and item 20: an unwritable --output_dir, bad parameter values
    Probe("sweep_local --output_dir under a file", ["sweep_local.py", "{tmp}/sweep.yaml", "--output_dir={tmp}/file/o"],
          _sweep_and_file, "is not a folder"),
    Probe("sweep_local with a bad parameter value", ["sweep_local.py", "{tmp}/sweep.yaml", "--output_dir={tmp}/o"],
          lambda tmp: _sweep(tmp, "[0, -3]"), "1 bad parameter value(s); nothing was run"),
    # issue 22: what a sweep YAML may run; grids too large; damaged state; run names that are paths
    Probe("sweep_local a command that is not a bindexp script", ["sweep_local.py", "{tmp}/sweep.yaml",
                                                                 "--output_dir={tmp}/o"],
          _command('["/bin/sh", "-c", "touch {tmp}/ran", "${args}"]'),
          "the command does not run a bindexp script: it runs '/bin/sh', not a Python interpreter"),
    Probe("sweep_local python -c", ["sweep_local.py", "{tmp}/sweep.yaml", "--output_dir={tmp}/o", "--dry_run=True"],
          _command('[".venv/bin/python", "-c", "open(\'{tmp}/ran\', \'w\')", "${args}"]'),
          "'-c' is not a bindexp script"),
    Probe("sweep_local an absolute program is checked too", ["sweep_local.py", "{tmp}/sweep.yaml", "--output_dir={tmp}/o"],
          _absolute_program, "1 bad parameter value(s); nothing was run"),
    Probe("sweep_local a 100,000-configuration grid", ["sweep_local.py", "{tmp}/sweep.yaml", "--output_dir={tmp}/o",
                                                       "--dry_run=True"], _huge_grid,
          "the sweep has 100,000 configurations, more than --max_configurations=1,000"),
    Probe("sweep_local a cut state.json", ["sweep_local.py", "{tmp}/sweep.yaml", "--output_dir={tmp}/o"], _cut_state,
          "state.json: not a readable sweep state"),
    Probe("sweep_local a run_name that is a path", ["sweep_local.py", "{tmp}/sweep.yaml", "--output_dir={tmp}/o"],
          _run_name_path, "1 bad parameter value(s); nothing was run"),
    # item 19: sweep ids, even with --dry_run
    Probe("start_agents ''", ["start_agents.py", "", "--dry_run=True", "--log_dir={tmp}/logs"], None,
          "ENTITY/PROJECT/SWEEP_ID"),
    Probe("start_agents ENTITY/PROJECT", ["start_agents.py", "me/proj", "--dry_run=True", "--log_dir={tmp}/logs"],
          None, "ENTITY/PROJECT/SWEEP_ID"),
]


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_bad_input_is_one_error_line_and_writes_nothing(probe, tmp_path):
    if probe.setup is not None:
        probe.setup(tmp_path)
    before = _tree(tmp_path)
    script, *args = [arg.replace("{tmp}", str(tmp_path)) for arg in probe.argv]
    env = {**os.environ, "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": "0", "PYTHONPATH": str(ROOT)}
    env.pop("WANDB_API_KEY", None)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode != 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert len(errors) == 1 and probe.says in errors[0], out.stderr
    assert _tree(tmp_path) == before, "the script wrote something"
    assert not (tmp_path / "ran").exists() and not (tmp_path.parent / "escaped").exists()
