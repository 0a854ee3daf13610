"""Sweep YAMLs, their expansion and command lines, the local runner (resume, failures, OOM) and GPU workers."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from bindexp.jobs.attention import AttentionSettings
from bindexp.jobs.circuit import CircuitSettings
from bindexp.jobs.evaluate import EvalSettings
from bindexp.jobs.hypotheses import HypothesesSettings
from bindexp.jobs.lens import LensSettings
from bindexp.jobs.locate import LocateSettings
from bindexp.jobs.patch import PatchSettings
from bindexp.jobs.path_patch import PathPatchSettings
from bindexp.jobs.subspace import SubspaceSettings
from bindexp.jobs.train import TrainSettings
from bindexp.runs.settings import parse_settings
from bindexp.sweeps.spec import (
    SweepError,
    agent_command,
    check_sweep,
    expand,
    iter_parameter_values,
    load_sweep,
    settings_class,
    with_interpreter,
)

ROOT = Path(__file__).resolve().parents[2]
ANALYSIS_SCRIPTS = {"scripts/attention.py": AttentionSettings, "scripts/lens.py": LensSettings,
                    "scripts/subspace.py": SubspaceSettings, "scripts/locate.py": LocateSettings,
                    "scripts/path_patch.py": PathPatchSettings, "scripts/circuit.py": CircuitSettings,
                    "scripts/hypotheses.py": HypothesesSettings}
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


def _script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------- the YAMLs in sweeps/


def test_the_expected_sweeps_exist():
    names = {p.stem for p in SWEEP_FILES}
    assert {"eval", "patch", "smoke"} <= names
    assert (ROOT / "sweeps" / "slurm_agent.sbatch").is_file()


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_file_is_well_formed(path):
    config = load_sweep(path)
    assert check_sweep(config) == []
    assert "entity" not in config and "project" not in config
    assert config["command"][0] == ".venv/bin/python" and "${args}" in config["command"]
    assert all(isinstance(spec, dict) and "parameters" not in spec for spec in config["parameters"].values())
    program = config["program"]
    assert (ROOT / program).is_file(), f"{program} does not exist"
    assert settings_class(config) is {"scripts/eval.py": EvalSettings, "scripts/patch.py": PatchSettings,
                                      "scripts/train.py": TrainSettings, **ANALYSIS_SCRIPTS}[program]
    assert len(expand(config)) >= 1


def _expected_value(cls, name, value):
    """What the settings hold when built from the Python value (a scalar for a list field means [scalar])."""
    try:
        return getattr(cls(**{name: value}), name)
    except ValidationError:
        if isinstance(value, list):
            raise
        return getattr(cls(**{name: [value]}), name)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_every_parameter_value_parses_back_from_wandb_formatting(path):
    config = load_sweep(path)
    cls = settings_class(config)
    pairs = list(iter_parameter_values(config))
    assert pairs
    for name, value in pairs:
        assert name in cls.model_fields, f"{path.name}: {name} is not a setting of {cls.__name__}"
        args = create_sweep_command_args({"args": {name: {"value": value}}})["args"]
        parsed = getattr(parse_settings(cls, args), name)
        assert parsed == _expected_value(cls, name, value), (path.name, name, value, args, parsed)
    # and each full run's argument list parses as a whole
    for params in expand(config)[:5]:
        parse_settings(cls, create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})["args"])


def test_patch_layers_none_parses_back():
    args = create_sweep_command_args({"args": {"layers": {"value": None}}})["args"]
    assert parse_settings(PatchSettings, args).layers is None
    args = create_sweep_command_args({"args": {"layers": {"value": [0, 5]}}})["args"]
    assert parse_settings(PatchSettings, args).layers == [0, 5]


class _Floats(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BINDEXP_TEST_", cli_parse_none_str="None",
                                      cli_exit_on_error=False, extra="forbid")
    rate: float = 0.1
    maybe: float | None = 1.0
    flag: bool = False
    sizes: list[int] = [1]


@pytest.mark.parametrize("name, value", [
    ("rate", 1e-05), ("rate", 0.5), ("rate", 3.0), ("rate", 12), ("maybe", None), ("maybe", 2.5e-3),
    ("flag", True), ("flag", False), ("sizes", [4, 16, 64]), ("sizes", 8),
])
def test_wandb_formatted_floats_none_booleans_lists_parse_back(name, value):
    args = create_sweep_command_args({"args": {name: {"value": value}}})["args"]
    assert getattr(parse_settings(_Floats, args), name) == (value if name != "sizes" or isinstance(value, list)
                                                             else [value])


# ---------------------------------------------------------------- checking, expanding, command lines


BASE = {"name": "t", "program": "scripts/eval.py", "method": "grid",
        "command": [".venv/bin/python", "${program}", "${args}"], "parameters": {"seed": {"values": [0, 1]}}}


@pytest.mark.parametrize("change, fragment", [
    ({"entity": "me"}, "entity"),
    ({"project": "p"}, "project"),
    ({"method": "hyperband"}, "method"),
    ({"parameters": {"seed": {"parameters": {"a": {"value": 1}}}}}, "nested"),
    ({"parameters": {"seed": {"value": 1, "values": [1]}}}, "not both"),
    ({"parameters": {"seed": {"distribution": "int_uniform", "min": 0, "max": 3}}}, "grid search needs"),
    ({"parameters": {"seed": {"distribution": "zipf"}}}, "unknown distribution"),
    ({"parameters": {"x": {"value": 1}}}, "two letters"),
    ({"parameters": {}}, "parameters"),
    ({"command": ["${env}", "${interpreter}", "${program}", "${args}"]}, "${interpreter}"),
    ({"command": [".venv/bin/python", "${program}"]}, "${args}"),
    ({"command": ["bash", "run.sh", "${args}"]}, "interpreter"),
    ({"method": "bayes"}, "metric"),
])
def test_check_sweep_names_the_problem(change, fragment):
    problems = check_sweep({**BASE, **change})
    assert problems and any(fragment in p for p in problems), problems


def test_grid_is_the_product_of_values_in_file_order():
    config = {**BASE, "parameters": {"model": {"values": ["a", "b"]}, "hops": {"values": [1, 2, 3]},
                                     "seq_len": {"value": [4, 8]}, "rebinding": {"values": [True, False]}}}
    expected = [{"model": m, "hops": h, "seq_len": [4, 8], "rebinding": r}
                for m in ("a", "b") for h in (1, 2, 3) for r in (True, False)]
    assert expand(config) == expected
    assert expand(config, count=5) == expected[:5]


def test_random_search_is_seeded_bounded_and_needs_a_count():
    config = {**BASE, "method": "random", "parameters": {
        "model": {"values": ["a", "b", "c"]}, "seed": {"distribution": "int_uniform", "min": 0, "max": 9},
        "temperature": {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0},
        "shots": {"value": 3}}}
    first, again, other = expand(config, seed=1, count=30), expand(config, seed=1, count=30), expand(config, seed=2, count=30)
    assert first == again and first != other and len(first) == 30
    assert {r["model"] for r in first} <= {"a", "b", "c"} and len({r["model"] for r in first}) > 1
    assert all(0 <= r["seed"] <= 9 and isinstance(r["seed"], int) for r in first)
    assert all(0.01 <= r["temperature"] <= 1.0 for r in first) and all(r["shots"] == 3 for r in first)
    with pytest.raises(SweepError, match="count"):
        expand(config)
    assert len(expand({**config, "run_cap": 4})) == 4
    with pytest.raises(SweepError, match="bayes"):
        expand({**config, "method": "bayes", "metric": {"name": "accuracy", "goal": "maximize"}}, count=2)


def test_command_is_what_wandb_agent_builds():
    config = load_sweep(ROOT / "sweeps" / "smoke.yaml")
    params = expand(config)[0]
    agent_args = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})["args"]
    assert agent_command(config, params) == [".venv/bin/python", "scripts/eval.py", *agent_args]
    assert with_interpreter(agent_command(config, params), "/x/python3.11") == ["/x/python3.11", "scripts/eval.py",
                                                                               *agent_args]
    default = {**BASE, "command": None}  # wandb's default command: ${env} ${interpreter} ${program} ${args}
    del default["command"]
    assert agent_command(default, {"seed": 1}) == ["/usr/bin/env", "python", "scripts/eval.py", "--seed=1"]
    assert with_interpreter(["/usr/bin/env", "python", "p.py"], "/v/python") == ["/usr/bin/env", "/v/python", "p.py"]
    assert with_interpreter(["bash", "x.sh"], "/v/python") == ["bash", "x.sh"]
    no_booleans = {**BASE, "command": [".venv/bin/python", "${program}", "${args_no_boolean_flags}"]}
    assert agent_command(no_booleans, {"chat": True, "rebinding": False, "seed": 2}) == [
        ".venv/bin/python", "scripts/eval.py", "--chat", "--seed=2"]


# ---------------------------------------------------------------- the local runner


APPEND_ARGS = """
import json, os, sys, time
with open(os.environ["SWEEP_TEST_LOG"], "a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
if "--seed=1" in sys.argv and os.environ.get("SWEEP_TEST_SLOW"):
    time.sleep(60)
"""


def _python_c_sweep(tmp_path: Path, code: str, seeds=(0, 1, 2)) -> Path:
    config = {"name": "pyc", "method": "grid", "command": ["python", "-c", code, "${args}"],
              "parameters": {"seed": {"values": list(seeds)}, "label": {"value": "a b"}}}
    path = tmp_path / "pyc.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_local_runner_resumes_after_a_kill(tmp_path):
    sweep, log, out = _python_c_sweep(tmp_path, APPEND_ARGS), tmp_path / "calls.jsonl", tmp_path / "out"
    env = {**os.environ, "SWEEP_TEST_LOG": str(log), "SWEEP_TEST_SLOW": "1"}
    command = [sys.executable, str(ROOT / "scripts" / "sweep_local.py"), str(sweep), f"--output_dir={out}",
               "--allow_any_command=True"]
    runner = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        deadline = time.time() + 60
        while len(_calls(log)) < 2 and time.time() < deadline:  # run 1 done, run 2 (seed 1) sleeping
            time.sleep(0.1)
        assert len(_calls(log)) == 2
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=60)
    finally:  # the runner's session: it and any run it left behind
        try:
            os.killpg(runner.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        runner.wait()
    assert runner.returncode == 128 + signal.SIGTERM
    state = json.loads((out / "pyc" / "state.json").read_text())
    assert [v["status"] for v in state.values()] == ["finished"]  # the interrupted run is not marked
    del env["SWEEP_TEST_SLOW"]
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout
    calls = _calls(log)
    expected = [["--seed=0", "--label=a b"], ["--seed=1", "--label=a b"], ["--seed=1", "--label=a b"],
                ["--seed=2", "--label=a b"]]
    assert calls == expected  # seed 0 not run again; seed 1 run again after the kill
    assert "skipped (finished before)" in again.stdout
    assert sorted(v["status"] for v in json.loads((out / "pyc" / "state.json").read_text()).values()) == ["finished"] * 3


def test_dry_run_lists_commands_and_runs_nothing(tmp_path, capsys, monkeypatch):
    sweep, log = _python_c_sweep(tmp_path, APPEND_ARGS), tmp_path / "calls.jsonl"
    monkeypatch.setenv("SWEEP_TEST_LOG", str(log))
    assert _script("sweep_local").main([str(sweep), f"--output_dir={tmp_path / 'o'}", "--dry_run=True",
                                        "--allow_any_command=True"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(sys.executable) == 3 and "'--label=a b'" in printed
    assert not log.exists() and not (tmp_path / "o" / "pyc" / "state.json").exists()


OOM_RUN = """
import sys
import torch
from bindexp.runs.cli import run_cli
from bindexp.jobs.evaluate import EvalSettings
from bindexp.runs.tracking import Tracker

def runner(settings):
    if settings.seed == 1:
        return
    with Tracker(settings, "eval"):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

raise SystemExit(run_cli(EvalSettings, runner, sys.argv[1:]))
"""


def test_an_out_of_memory_run_fails_with_its_reason_recorded_and_the_sweep_goes_on(tmp_path, capsys, monkeypatch):
    """torch raises OutOfMemoryError the way it does on a GPU; the rest (exit code, W&B run, runner) is real."""
    monkeypatch.chdir(ROOT)
    config = {"name": "oom", "method": "grid", "command": ["python", "-c", OOM_RUN, "${args}"],
              "parameters": {"seed": {"values": [0, 1]}, "progress": {"value": False}}}
    sweep = tmp_path / "oom.yaml"
    sweep.write_text(yaml.safe_dump(config, sort_keys=False))
    code = _script("sweep_local").main([str(sweep), f"--output_dir={tmp_path / 'out'}", "--allow_any_command=True"])
    printed = capsys.readouterr().out
    assert code == 1
    state = list(json.loads((tmp_path / "out" / "oom" / "state.json").read_text()).values())
    assert [s["status"] for s in state] == ["failed", "finished"] and state[0]["returncode"] == 3
    assert "out of memory" in state[0]["error"] and "error: out of memory" in state[0]["error"]
    assert "failed runs" in printed and "[1] --seed=0 --progress=False" in printed
    run_dirs = list((Path(os.environ["WANDB_DIR"]) / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    inspected = json.loads(subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect",
                                           "--summary", "--json", str(run_dirs[0])],
                                          capture_output=True, text=True, check=True).stdout)
    assert inspected["summary"]["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert inspected["exit_code"] == 1 and inspected["config"]["group"] == "oom"


def test_bad_sweep_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad = _write(tmp_path / "bad.yaml", """
        method: grid
        parameters: {seed: {values: [0, 1]}}
        command: [python, -c, "pass"]
    """)
    for argv, fragment in (([str(bad)], "${args}"), ([str(tmp_path / "missing.yaml")], "no sweep file"),
                           ([str(bad), "--count=0"], "count")):
        assert _script("sweep_local").main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], lines


MISLEADING_RUN = """
import sys
from bindexp.runs.cli import run_cli
from bindexp.jobs.evaluate import EvalSettings
from bindexp.runs.tracking import Tracker

def runner(settings):
    with Tracker(settings, "eval") as tracker:
        tracker.write_summary({"accuracy": 1.0})
    print("results: /not/this/folder")  # what the runner once scraped, printed last
    print("W&B run saved offline; upload it with: wandb sync /not/this/run")

raise SystemExit(run_cli(EvalSettings, runner, sys.argv[1:]))
"""


def test_the_local_runner_learns_each_runs_folder_from_the_run_not_from_its_output(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    outputs = tmp_path / "runs"
    config = {"name": "where", "method": "grid", "command": ["python", "-c", MISLEADING_RUN, "${args}"],
              "parameters": {"seed": {"values": [0, 1]}, "output_dir": {"value": str(outputs)}}}
    sweep = tmp_path / "where.yaml"
    sweep.write_text(yaml.safe_dump(config, sort_keys=False))
    assert _script("sweep_local").main([str(sweep), f"--output_dir={tmp_path / 'out'}", "--wandb_mode=disabled",
                                        "--allow_any_command=True"]) == 0
    state = list(json.loads((tmp_path / "out" / "where" / "state.json").read_text()).values())
    folders = [Path(s["run_dir"]) for s in state]
    assert sorted(folders) == sorted(p for p in outputs.iterdir()) and len(set(folders)) == 2
    for seed, folder in enumerate(folders):
        written = json.loads((folder / "config.json").read_text())
        assert written["job_type"] == "eval" and written["settings"]["seed"] == seed
        assert written["settings"]["group"] == "where"


# ---------------------------------------------------------------- GPU workers


def test_start_agents_dry_run_pins_one_agent_per_gpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    code = _script("start_agents").main(["me/proj/abc123", "--count=4", "--dry_run=True", f"--log_dir={tmp_path}"])
    lines = capsys.readouterr().out.strip().splitlines()
    wandb_cli = str(Path(sys.executable).with_name("wandb"))
    assert code == 0 and len(lines) == 2
    for gpu, line in zip(("2", "5"), lines):
        assert line.startswith(f"CUDA_VISIBLE_DEVICES={gpu} {wandb_cli} agent --forward-signals --count 4 me/proj/abc123")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert _script("start_agents").main(["me/proj/abc123", "--gpus=[0, 1, 3]", "--dry_run=True"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    assert _script("start_agents").main(["me/proj/abc123"]) == 2  # no GPU at all
    assert "no GPU found" in capsys.readouterr().err


def test_start_agents_really_starts_the_agents_and_reports_their_exit(tmp_path):
    """Real `wandb agent` processes; with no server or API key they exit at once, which is reported."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "WANDB_API_KEY": ""}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "start_agents.py"), "me/proj/abc123", "--count=1",
                          f"--log_dir={tmp_path}"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 1
    assert out.stdout.count("exited with 1") == 2
    for gpu in ("0", "1"):
        assert "API key" in (tmp_path / f"agent-gpu{gpu}.log").read_text()


def test_slurm_template_starts_agents_on_the_allocated_gpus(tmp_path):
    script = ROOT / "sweeps" / "slurm_agent.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "#SBATCH --gres=gpu" in script.read_text()
    env = {**os.environ, "SWEEP_ID": "me/proj/abc123", "COUNT": "7", "CUDA_VISIBLE_DEVICES": "0,1,2",
           "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_JOB_ID": "42", "BINDEXP_DRY_RUN": "True"}
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == [f"CUDA_VISIBLE_DEVICES={g}" for g in "012"]
    assert all("--count 7 me/proj/abc123" in line and "outputs/agents/42/" in line for line in lines)
    missing = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                             env={k: v for k, v in env.items() if k != "SWEEP_ID"}, cwd=tmp_path)
    assert missing.returncode != 0 and "SWEEP_ID" in missing.stderr
