"""Start one `wandb agent` per visible GPU for a sweep (needs a W&B server and an API key).

    .venv/bin/wandb sweep --project bindexp sweeps/eval.yaml          # prints ENTITY/PROJECT/SWEEP_ID
    .venv/bin/python scripts/start_agents.py ENTITY/PROJECT/SWEEP_ID --count=20
    .venv/bin/python scripts/start_agents.py ENTITY/PROJECT/SWEEP_ID --gpus=[0,1] --dry_run=True

Each agent gets CUDA_VISIBLE_DEVICES=<its GPU> and logs to outputs/agents/agent-gpu<N>.log.
Waits for every agent; exit status 1 when one of them failed.
"""

from __future__ import annotations

import signal

from bindexp.runs.cli import run_cli
from bindexp.sweeps.agents import AgentSettings, start_agents


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # stops the agents on the way out


def _run(settings: AgentSettings) -> int:
    agents = start_agents(settings)
    return 0 if all(agent.returncode in (0, None) for agent in agents) else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(AgentSettings, _run, argv)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    raise SystemExit(main())
