"""Run a sweep YAML here, without a W&B server: one offline run after another.

    python scripts/sweep_local.py sweeps/smoke.yaml
    python scripts/sweep_local.py sweeps/eval.yaml --dry_run=True      # list the command lines
    python scripts/sweep_local.py sweeps/NAME.yaml --count=20 --seed=1  # random search: 20 draws

Runs are grouped under the sweep's name; a second invocation skips the runs that finished and
retries the failed ones. Exit status 1 when a run failed, 2 on bad input.
"""

from __future__ import annotations

import signal

from bindexp.runs.cli import run_cli
from bindexp.sweeps.local import LocalSweepSettings, run_local_sweep


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the running run, which is stopped too


def main(argv: list[str] | None = None) -> int:
    return run_cli(LocalSweepSettings, lambda settings: run_local_sweep(settings).exit_code, argv)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    raise SystemExit(main())
