"""GPU workers for a W&B sweep: one `wandb agent` per visible GPU, each pinned to its GPU.

    python scripts/start_agents.py ENTITY/PROJECT/SWEEP_ID --count=20

GPUs come from `--gpus`, else CUDA_VISIBLE_DEVICES (what slurm sets for an allocation), else
`nvidia-smi -L`. Each agent runs with CUDA_VISIBLE_DEVICES=<its GPU>, and with W&B's flapping
check off and a high initial-failure limit, so a run that fails (e.g. out of GPU memory: exit 3,
the reason in the run's summary `error`) is recorded and the agent takes the next one.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, CliPositionalArg, SettingsConfigDict

from bindexp.errors import InputError
from bindexp.runs.settings import StrList
from bindexp.runs.tracking import wandb_cli

SWEEP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9]+")
AGENT_ENV = {
    "WANDB_AGENT_DISABLE_FLAPPING": "true",  # quick failures (OOM) must not stop the agent
    "WANDB_AGENT_MAX_INITIAL_FAILURES": "1000",
}


class AgentSettings(BaseSettings):
    """`scripts/start_agents.py`: one `wandb agent` per GPU."""

    model_config = SettingsConfigDict(
        env_prefix="BINDEXP_", cli_parse_none_str="None", cli_exit_on_error=False, extra="forbid"
    )

    sweep_id: CliPositionalArg[str] = Field(description="ENTITY/PROJECT/SWEEP_ID as `wandb sweep` prints it")
    count: int | None = Field(None, ge=1, description="runs per agent (wandb agent --count); None: until done")
    gpus: StrList | None = Field(None, description="GPU ids; None: CUDA_VISIBLE_DEVICES, else nvidia-smi -L")
    agents_per_gpu: int = Field(1, ge=1)
    max_consecutive_failures: int | None = Field(None, ge=1, description="stop an agent after this many in a row")
    log_dir: str = Field("outputs/agents", description="one log file per agent")
    dry_run: bool = Field(False, description="print the agent commands and start nothing")

    @field_validator("sweep_id")
    @classmethod
    def _entity_project_id(cls, sweep_id: str) -> str:
        if not SWEEP_ID.fullmatch(sweep_id):
            raise ValueError(f"expected ENTITY/PROJECT/SWEEP_ID as `wandb sweep` prints it, got {sweep_id!r}")
        return sweep_id


@dataclasses.dataclass
class Agent:
    gpu: str
    command: list[str]
    env: dict[str, str]
    log: Path
    returncode: int | None = None


def visible_gpus(requested: list[str] | None = None) -> list[str]:
    """GPU ids to use: the requested ones, else CUDA_VISIBLE_DEVICES, else those nvidia-smi lists."""
    if requested:
        return [str(g) for g in requested]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return re.findall(r"^GPU (\d+):", listing, flags=re.MULTILINE)


def agent_commands(settings: AgentSettings) -> list[Agent]:
    gpus = visible_gpus(settings.gpus)
    if not gpus:
        raise InputError("no GPU found (nvidia-smi -L lists none and CUDA_VISIBLE_DEVICES is unset or empty); "
                         "pass --gpus=[0, 1] or run a sweep on CPU with scripts/sweep_local.py")
    command = [wandb_cli(), "agent", "--forward-signals"]
    if settings.count is not None:
        command += ["--count", str(settings.count)]
    if settings.max_consecutive_failures is not None:
        command += ["--max-consecutive-failed-runs", str(settings.max_consecutive_failures)]
    command.append(settings.sweep_id)
    agents = []
    for gpu in gpus:
        for copy in range(settings.agents_per_gpu):
            env = {**os.environ, **AGENT_ENV, "CUDA_VISIBLE_DEVICES": gpu}
            suffix = f"-{copy}" if settings.agents_per_gpu > 1 else ""
            agents.append(Agent(gpu, list(command), env, Path(settings.log_dir) / f"agent-gpu{gpu}{suffix}.log"))
    return agents


def start_agents(settings: AgentSettings, out: TextIO | None = None) -> list[Agent]:
    """Start the agents, wait for all of them, report each one's exit status."""
    out = out or sys.stdout
    agents = agent_commands(settings)
    for agent in agents:
        print(f"CUDA_VISIBLE_DEVICES={agent.gpu} {shlex.join(agent.command)}  > {agent.log}", file=out, flush=True)
    if settings.dry_run:
        return agents
    Path(settings.log_dir).mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for agent in agents:
            with open(agent.log, "w") as log:
                procs.append(subprocess.Popen(agent.command, env=agent.env, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL))
        for agent, proc in zip(agents, procs):
            agent.returncode = proc.wait()
    finally:  # interrupted: the agents (which forward the signal to their runs) stop too
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    for agent in agents:
        status = "done" if agent.returncode == 0 else f"exited with {agent.returncode}: {_last_line(agent.log)}"
        print(f"agent on GPU {agent.gpu}: {status}", file=out, flush=True)
    return agents


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"
