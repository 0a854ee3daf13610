"""Evaluate a model on generated programs; one W&B run (job_type `eval`).

    python scripts/eval.py --model=smollm2-135m --task=binding --hops=2 --seq_len=16 \
        --num_programs=200 --seed=0 --shots=3

Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable.
"""

from __future__ import annotations

from bindexp.jobs.evaluate import EvalSettings, run_eval
from bindexp.plots.accuracy import accuracy_table
from bindexp.runs.cli import run_cli


def _run_and_print(settings: EvalSettings) -> None:
    outcome = run_eval(settings)
    by = ["hops"] if outcome.results["hops"].notna().any() else ["seq_len"]
    table = accuracy_table(outcome.results, by)
    print(f"\naccuracy of {settings.model} on {settings.task} ({settings.n_shots}-shot):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"overall: {outcome.summary['accuracy']:.3f} over {outcome.summary['n_programs']} programs")


def main(argv: list[str] | None = None) -> int:
    return run_cli(EvalSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
