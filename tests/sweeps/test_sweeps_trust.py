"""The local sweep runner with real processes: checks before any run, one runner per sweep, no orphan runs."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cli  # the command-line tier: scripts run as a user runs them

ROOT = Path(__file__).resolve().parents[2]
RUNNER = [sys.executable, str(ROOT / "scripts" / "sweep_local.py"), "--allow_any_command=True"]

# Each run appends its arguments and pid to a log; the run with --seed=1 then sleeps (a long run).
RECORD_AND_SLEEP = """
import json, os, sys, time
with open(os.environ["SWEEP_TEST_LOG"], "a") as handle:
    handle.write(json.dumps({"args": sys.argv[1:], "pid": os.getpid()}) + "\\n")
if "--seed=1" in sys.argv:
    time.sleep(120)
"""


def _script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sweep(tmp_path: Path, name="pyc", seeds=(0, 1, 2)) -> Path:
    config = {"name": name, "method": "grid", "command": ["python", "-c", RECORD_AND_SLEEP, "${args}"],
              "parameters": {"seed": {"values": list(seeds)}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _wait_for_calls(log: Path, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.time() + timeout
    while len(_calls(log)) < count and time.time() < deadline:
        time.sleep(0.1)
    calls = _calls(log)
    assert len(calls) >= count, calls
    return calls


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def test_every_configuration_is_checked_against_the_script_settings_before_any_run(tmp_path, capsys):
    config = {"name": "bad-values", "program": "scripts/eval.py", "method": "grid",
              "command": [".venv/bin/python", "${program}", "${args}"],
              "parameters": {"model": {"value": "tiny-random-llama"}, "shots": {"values": [-1, 0]},
                             "hops": {"values": [[1], [9]]}, "bogus_option": {"value": 3}}}
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / "out"
    assert _script("sweep_local").main([str(sweep), f"--output_dir={out}"]) == 2
    captured = capsys.readouterr()
    error = _one_error_line(captured.err)
    assert "nothing was run" in error
    listed = [line.strip() for line in captured.err.splitlines()[1:]]
    assert listed == ["parameters.bogus_option: not a setting of scripts/eval.py (EvalSettings)",
                      "parameters.shots=-1: Input should be greater than or equal to 0",
                      "parameters.hops=[9]: Value error, hops must be between 1 and 4, got [9]"]
    assert not out.exists()


def test_a_second_runner_on_the_same_sweep_refuses_with_one_line(tmp_path):
    sweep, log, out = _sweep(tmp_path), tmp_path / "calls.jsonl", tmp_path / "out"
    env = {**os.environ, "SWEEP_TEST_LOG": str(log)}
    command = [*RUNNER, str(sweep), f"--output_dir={out}"]
    first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        _wait_for_calls(log, 2)  # seed 0 done, seed 1 running
        second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert "is in use by another process (pid" in _one_error_line(second.stderr)
        time.sleep(0.5)
        assert len(_calls(log)) == 2  # the second process started nothing
    finally:
        _kill_session(first)
    # the lock dies with its holder: a new runner takes over and resumes
    env_fast = {**env}
    config = yaml.safe_load(sweep.read_text())
    config["command"][2] = config["command"][2].replace("time.sleep(120)", "pass")
    sweep.write_text(yaml.safe_dump(config, sort_keys=False))
    again = subprocess.run(command, env=env_fast, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [c["args"] for c in _calls(log)[2:]] == [["--seed=1"], ["--seed=2"]]


def test_a_sigkilled_runner_leaves_no_run_behind(tmp_path):
    sweep, log = _sweep(tmp_path, seeds=(1,)), tmp_path / "calls.jsonl"
    env = {**os.environ, "SWEEP_TEST_LOG": str(log)}
    runner = subprocess.Popen([*RUNNER, str(sweep), f"--output_dir={tmp_path / 'out'}"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        child = _wait_for_calls(log, 1)[0]["pid"]
        assert _alive(child)
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        deadline = time.time() + 15
        while _alive(child) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the run outlived its runner"
    finally:
        _kill_session(runner)


def test_a_sweep_name_cannot_write_outside_the_output_dir(tmp_path, monkeypatch, capsys):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("SWEEP_TEST_LOG", str(log))
    sweep = _sweep(tmp_path, name="../../escaped", seeds=(0,))
    out = tmp_path / "a" / "b" / "out"
    assert _script("sweep_local").main([str(sweep), f"--output_dir={out}", "--allow_any_command=True"]) == 0
    assert len(_calls(log)) == 1
    assert not (tmp_path / "a" / "escaped").exists() and not (tmp_path / "escaped").exists()
    written = [p for p in tmp_path.rglob("state.json")]
    assert len(written) == 1 and written[0].parent.parent == out and ".." != written[0].parent.name
    assert "keeps its state in" in capsys.readouterr().out


@pytest.mark.parametrize("sweep_id", ["", "me/proj", "me/proj/abc/def", "../x/abc", "me/proj/abc 1"])
def test_start_agents_refuses_a_malformed_sweep_id_even_in_a_dry_run(tmp_path, sweep_id):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "start_agents.py"), sweep_id, "--dry_run=True",
                          f"--log_dir={tmp_path / 'logs'}"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert "ENTITY/PROJECT/SWEEP_ID" in _one_error_line(out.stderr)


def test_a_dry_run_streams_each_command_line_as_its_configuration_is_checked(tmp_path, capsys):
    config = {"name": "stream", "program": "scripts/eval.py", "method": "grid",
              "command": [".venv/bin/python", "${program}", "${args}"],
              "parameters": {"model": {"value": "tiny-random-llama"}, "num_programs": {"values": [2, 3, 0]}}}
    sweep = tmp_path / "stream.yaml"
    sweep.write_text(yaml.safe_dump(config, sort_keys=False))
    assert _script("sweep_local").main([str(sweep), f"--output_dir={tmp_path / 'o'}", "--dry_run=True"]) == 2
    captured = capsys.readouterr()
    printed = captured.out.splitlines()
    assert [line.split(" ")[0] for line in printed] == ["[1/3]", "[2/3]", "[3/3]"]  # listed, then refused
    assert "--num_programs=2" in printed[0] and "scripts/eval.py" in printed[0]
    assert "parameters.num_programs=0" in captured.err and "nothing was run" in _one_error_line(captured.err)
    assert not (tmp_path / "o").exists()


def test_a_foreign_command_runs_only_when_allowed(tmp_path, capsys):
    marker = tmp_path / "ran"
    config = {"name": "foreign", "method": "grid", "command": ["python", "-c", f"open({str(marker)!r}, 'w')", "${args}"],
              "parameters": {"seed": {"value": 0}}}
    sweep = tmp_path / "foreign.yaml"
    sweep.write_text(yaml.safe_dump(config, sort_keys=False))
    assert _script("sweep_local").main([str(sweep), f"--output_dir={tmp_path / 'o'}"]) == 2
    assert "does not run a bindexp script" in _one_error_line(capsys.readouterr().err) and not marker.exists()
    assert _script("sweep_local").main([str(sweep), f"--output_dir={tmp_path / 'o'}", "--allow_any_command=True"]) == 0
    assert marker.exists()
