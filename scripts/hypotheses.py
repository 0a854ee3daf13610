"""Which hypothesis of binding explains the model where? Every hypothesis the task declares
(pointer-following, direct lookup, positional, the line-1/line-2 heuristic) scored on the same exact
patch grids, one per counterfactual kind: IIA per hypothesis x variable x cell and a verdict per cell
by the interval rule; one W&B run (job_type `hypotheses`).

    python scripts/hypotheses.py --model=smollm2-135m --hops=2 --seq_len=6 --shots=3 --num_programs=20

Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable.
"""

from __future__ import annotations

from bindexp.jobs.hypotheses import HypothesesSettings, run_hypotheses
from bindexp.runs.cli import run_cli


def _run_and_print(settings: HypothesesSettings) -> None:
    outcome = run_hypotheses(settings)
    summary = outcome.summary
    print(f"\nhypotheses on {settings.model} (a hypothesis explains a cell when it carries -- Wilson lower bound of an "
          f"allowed variable's IIA >= {settings.iia_threshold} -- and every other does not):")
    for kind, entry in summary["verdicts"].items():
        counts = ", ".join(f"{label} {n}" for label, n in entry["cells"].items() if n)
        print(f"{kind} ({entry['pairs']} pairs), cells: {counts}")
    for title, key in (("alone explains", "explained_alone_where"), ("is excluded at", "excluded_where")):
        for name, where in summary[key].items():
            for kind, cells in where.items():
                print(f"  {name} {title} {kind}: {cells}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(HypothesesSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
