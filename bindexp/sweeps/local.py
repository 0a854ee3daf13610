"""A sweep without a W&B server: the runs of a sweep YAML, one after another, as offline runs.

    python scripts/sweep_local.py sweeps/smoke.yaml

Each run's command line is built by wandb's own `create_sweep_command_args` /
`create_sweep_command` (so a script sees exactly the arguments `wandb agent` would give it), with
the interpreter the YAML names replaced by this one. Runs are grouped under the sweep's `name`
(`BINDEXP_GROUP`), write offline W&B runs (`WANDB_MODE=offline`), and are recorded in
`<output_dir>/<name>/state.json`, keyed by their argument list: a second invocation skips the
runs that finished (resume after a kill) and runs the failed ones again. Each run tells where its
folder is through a pointer file this runner names (`bindexp.io.folder.announce`), beside its log.

Before the first run: the command must run a bindexp script (`<python> scripts/<job>.py ...`;
anything else only with `--allow_any_command=True`), the sweep may not have more configurations
than `--max_configurations`, every configuration is checked against the settings class of the
script it runs (one line per bad parameter, nothing run) and `--output_dir` must be writable. A dry
run prints each command line as soon as its configuration is checked. One process at a time runs a
sweep: it holds the lock on `state.lock` beside `state.json` (`bindexp.io.locks`; a second process
refuses with one line naming the holder; the kernel drops the lock however the holder ends). Each
run gets SIGTERM when the runner dies, even by SIGKILL (Linux parent-death signal), so no run
outlives it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import Field
from pydantic_settings import BaseSettings, CliPositionalArg, SettingsConfigDict

from bindexp.io.folder import POINTER_ENV, check_writable_dir, read_pointer, replace_text
from bindexp.io.locks import FolderLock
from bindexp.sweeps.spec import (
    ConfigurationCheck,
    SweepError,
    agent_args,
    agent_command,
    configuration_problems,
    expand,
    foreign_command,
    load_sweep,
    sweep_folder_name,
    with_interpreter,
)
from bindexp.vocab import WandbMode

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
EXIT_MEANINGS = {2: "bad input", 3: "out of memory", 4: "disk full", -9: "killed", -15: "terminated", 143: "terminated"}


class LocalSweepSettings(BaseSettings):
    """`scripts/sweep_local.py`: run a sweep YAML here, one run after another."""

    model_config = SettingsConfigDict(
        env_prefix="BINDEXP_", cli_parse_none_str="None", cli_exit_on_error=False, extra="forbid"
    )

    sweep: CliPositionalArg[str] = Field(description="the sweep YAML, e.g. sweeps/smoke.yaml")
    count: int | None = Field(None, ge=1, description="random: configurations drawn (default run_cap); grid: first N")
    seed: int = Field(0, description="random search: the draws are fixed by this seed")
    max_runs: int | None = Field(None, ge=1, description="start at most this many runs now (like wandb agent --count)")
    wandb_mode: WandbMode = "offline"
    output_dir: str = Field("outputs/sweeps", description="state and logs go to <output_dir>/<sweep name>/")
    rerun_failed: bool = Field(True, description="run again the runs that failed last time")
    dry_run: bool = Field(False, description="print the command lines and run nothing")
    max_configurations: int = Field(1000, ge=1, description="refuse a sweep of more configurations than this")
    allow_any_command: bool = Field(False, description="run a command that is not a bindexp script (the YAML's "
                                                       "command runs as you: only for sweep files you trust)")


@dataclasses.dataclass
class RunOutcome:
    index: int
    args: list[str]
    command: list[str]
    status: Literal["finished", "failed", "skipped", "pending"]
    returncode: int | None = None
    error: str | None = None
    log: str | None = None
    run_dir: str | None = None


@dataclasses.dataclass
class SweepReport:
    name: str
    state_path: Path
    outcomes: list[RunOutcome]

    @property
    def failures(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def run_keys(arg_lists: list[list[str]]) -> list[str]:
    """State keys: the exact argument list, with `#2`, `#3` ... on repeats (random search can repeat)."""
    seen: dict[str, int] = {}
    keys = []
    for args in arg_lists:
        key = json.dumps(args)
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return keys


def load_state(path: Path) -> dict[str, Any]:
    """The sweep's state.json ({} when there is none); SweepError naming the file when it is damaged."""
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SweepError(f"{path}: not a readable sweep state ({err}); move it away to run the sweep afresh") from None
    if not isinstance(state, dict) or not all(isinstance(v, dict) for v in state.values()):
        raise SweepError(f"{path}: not a sweep state (a JSON object of runs); move it away to run the sweep afresh")
    return state


def _save_state(path: Path, state: dict[str, Any]) -> None:
    replace_text(path, json.dumps(state, indent=1))  # atomic: a kill never leaves half a state file


def child_env(name: str, wandb_mode: str) -> dict[str, str]:
    """The environment of every run: grouped under the sweep's name and marked as one of its runs
    (`sweep` setting), W&B in the chosen mode."""
    env = dict(os.environ)
    env.update({
        "WANDB_MODE": wandb_mode,
        "BINDEXP_WANDB_MODE": wandb_mode,
        "BINDEXP_GROUP": name,
        "BINDEXP_SWEEP": name,  # the run's `sweep` setting: config key and tag `sweep:<name>`
        "WANDB_RUN_GROUP": name,
        "PYTHONUNBUFFERED": "1",
    })
    return env


def run_local_sweep(settings: LocalSweepSettings, out: TextIO | None = None) -> SweepReport:
    """Run (or with dry_run, list) every run of the sweep not finished before; see the module doc."""
    out = out or sys.stdout
    config = load_sweep(settings.sweep)
    name = str(config["name"])
    runs = expand(config, seed=settings.seed, count=settings.count, limit=settings.max_configurations)
    check_command(config, runs[0], settings)
    folder = Path(settings.output_dir) / sweep_folder_name(name)
    state = load_state(folder / STATE_FILE)
    if settings.dry_run:
        return _dry_run(config, runs, state, folder, settings.sweep, out)
    check_configurations(config, runs, settings.sweep)
    if folder.name != name:
        print(f"note: sweep {name!r} keeps its state in {folder}", file=out, flush=True)
    check_writable_dir(settings.output_dir, "output_dir")
    with FolderLock.acquire(folder, "sweep folder", f"sweep {name!r}", LOCK_FILE):
        state = load_state(folder / STATE_FILE)  # as the last holder left it
        report = _run_all(settings, config, runs, state, folder, out)
    _print_report(report, out)
    return report


def _run_all(settings: LocalSweepSettings, config: dict[str, Any], runs: list[dict[str, Any]],
             state: dict[str, Any], folder: Path, out: TextIO) -> SweepReport:
    name, state_path = str(config["name"]), folder / STATE_FILE
    arg_lists = [agent_args(params)["args"] for params in runs]
    outcomes = []
    started = 0
    for index, (key, args, params) in enumerate(zip(run_keys(arg_lists), arg_lists, runs), start=1):
        command = with_interpreter(agent_command(config, params), sys.executable)
        outcome = RunOutcome(index, args, command, "pending")
        outcomes.append(outcome)
        previous = state.get(key, {})
        tag = f"[{index}/{len(runs)}]"
        if previous.get("status") == "finished" or (previous.get("status") == "failed" and not settings.rerun_failed):
            outcome.status, outcome.run_dir = "skipped", previous.get("run_dir")
            print(f"{tag} skipped ({previous['status']} before): {' '.join(args)}", file=out, flush=True)
            continue
        if settings.max_runs is not None and started >= settings.max_runs:
            continue
        started += 1
        print(f"{tag} {shlex.join(command)}", file=out, flush=True)
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        log = folder / "logs" / f"run-{index:04d}.log"
        pointer = log.with_suffix(".where.json")
        pointer.unlink(missing_ok=True)
        env = {**child_env(name, settings.wandb_mode), POINTER_ENV: str(pointer.absolute())}
        _execute(outcome, command, env, log, out)
        outcome.run_dir = (read_pointer(pointer) or {}).get("run_dir")
        state[key] = {
            "status": outcome.status, "returncode": outcome.returncode, "error": outcome.error,
            "args": args, "log": str(log), "run_dir": outcome.run_dir, "ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        _save_state(state_path, state)
    return SweepReport(name, state_path, outcomes)


def _dry_run(config: dict[str, Any], runs: list[dict[str, Any]], state: dict[str, Any], folder: Path, source: str,
             out: TextIO) -> SweepReport:
    """Each command line as soon as its configuration is checked (bad values listed at the end)."""
    check = ConfigurationCheck(config)
    problems = check.unknown_names()
    arg_lists = [agent_args(params)["args"] for params in runs]
    outcomes = []
    for index, (key, args, params) in enumerate(zip(run_keys(arg_lists), arg_lists, runs), start=1):
        command = with_interpreter(agent_command(config, params), sys.executable)
        outcomes.append(RunOutcome(index, args, command, "pending"))
        problems += [line for line in check.problems(params) if line not in problems]
        previous = state.get(key, {}).get("status")
        done = f"skipped ({previous} before): " if previous in ("finished", "failed") else ""
        print(f"[{index}/{len(runs)}] {done}{' '.join(args) if done else shlex.join(command)}", file=out, flush=True)
    _raise_problems(problems, source)
    return SweepReport(str(config["name"]), folder / STATE_FILE, outcomes)


def check_command(config: dict[str, Any], params: dict[str, Any], settings: LocalSweepSettings) -> None:
    """The runner runs bindexp scripts only, unless --allow_any_command=True (see the module doc)."""
    why = foreign_command(agent_command(config, params))
    if why is not None and not settings.allow_any_command:
        raise SweepError(f"{settings.sweep}: the command does not run a bindexp script: {why}; "
                         "run it anyway with --allow_any_command=True")


def check_configurations(config: dict[str, Any], runs: list[dict[str, Any]], source: str) -> None:
    """Raise SweepError (one line per bad parameter) when a configuration fails the script's settings."""
    _raise_problems(configuration_problems(config, runs), source)


def _raise_problems(problems: list[str], source: str) -> None:
    if problems:
        raise SweepError(f"{source}: {len(problems)} bad parameter value(s); nothing was run\n  "
                         + "\n  ".join(problems))


_LIBC: Any = None


def _die_with_parent_hook() -> Any:
    """A preexec_fn that makes the child get SIGTERM when this process dies (Linux prctl
    PR_SET_PDEATHSIG), or None elsewhere. libc is loaded here, in the parent, not after fork."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def hook() -> None:
        _LIBC.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the runner died before the call above
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def _execute(outcome: RunOutcome, command: list[str], env: dict[str, str], log: Path, out: TextIO) -> None:
    """Run one command, echoing and logging its output; fill in the outcome."""
    lines: list[str] = []
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent_hook())
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                handle.write(line)
                out.write(line)
                lines.append(line.rstrip("\n"))
            proc.wait()
        finally:  # interrupted (Ctrl-C, SIGTERM): the run must not outlive the runner
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    outcome.returncode, outcome.log = proc.returncode, str(log)
    outcome.status = "finished" if proc.returncode == 0 else "failed"
    if proc.returncode != 0:
        outcome.error = failure_reason(proc.returncode, lines)


def failure_reason(returncode: int, lines: list[str]) -> str:
    """One line: the run's own `error:` line, else the last line it printed, and what the exit code means."""
    errors = [line for line in lines if line.startswith("error:")]
    text = [line for line in lines if line.strip()]
    reason = errors[-1] if errors else (text[-1].strip() if text else "no output")
    meaning = EXIT_MEANINGS.get(returncode)
    return f"exit {returncode}{f' ({meaning})' if meaning else ''}: {reason}"


def _print_report(report: SweepReport, out: TextIO) -> None:
    counts: dict[str, int] = {}
    for outcome in report.outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    parts = [f"{counts[s]} {s}" for s in ("finished", "skipped", "failed", "pending") if counts.get(s)]
    print(f"\nsweep {report.name}: {len(report.outcomes)} runs: {', '.join(parts)}", file=out)
    if counts.get("pending"):
        print("pending runs were not started (--max_runs); run the same command again to continue", file=out)
    if report.failures:
        print("failed runs (run the same command again to retry them):", file=out)
        for outcome in report.failures:
            print(f"  [{outcome.index}] {' '.join(outcome.args)}\n      {outcome.error}\n      log: {outcome.log}",
                  file=out)
    print(f"state: {report.state_path}", file=out, flush=True)
