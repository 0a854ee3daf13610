"""Where is each variable of the declared causal model of binding (query, pointer per hop, value)?
One exact patch grid per counterfactual kind, read as a table variable -> (layer, role) cells with
IIA and Wilson intervals; one W&B run (job_type `locate`).

    python scripts/locate.py --model=smollm2-135m --hops=2 --seq_len=6 --shots=3 --num_programs=20

Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable.
"""

from __future__ import annotations

from bindexp.jobs.locate import LocateSettings, run_locate
from bindexp.runs.cli import run_cli
from bindexp.stats import display


def _run_and_print(settings: LocateSettings) -> None:
    outcome = run_locate(settings)
    print(f"\nlocate on {settings.model} (site {settings.site}; a cell carries a variable when the Wilson lower "
          f"bound of its IIA reaches {settings.iia_threshold}):")
    columns = ["variable", "counterfactual", "pairs", "best_layer", "best_role", "iia", "iia_ci_low", "iia_ci_high",
               "where", "cells_undetermined"]
    print(outcome.table[columns].map(display).to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    return run_cli(LocateSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
