"""Compare runs: tidy accuracy table, mean over seeds (95% t-CI) by model x hops x seq_len, plots, patch grids.

    python scripts/compare.py --group=smoke-cpu                        # offline runs in ./wandb
    python scripts/compare.py --runs_dir=/data/wandb --tags=[eval]      # another W&B folder
    python scripts/compare.py --source=api --entity=me --sweep=abc123   # a W&B server
    python scripts/compare.py --group=smoke-cpu --log_wandb=True        # also a W&B run (job_type compare)

Writes tidy.csv, aggregate.csv, aggregate.md, accuracy_by_model.png, accuracy_by_hops.png and,
for patch runs, patch/*.safetensors|json|png and patch_cells.csv, for training runs train_runs.csv,
train_aggregate.csv and training_by_hops.png under --out; left_out.csv lists every run not counted
(failed, unreadable, truncated, duplicates, a job type compare does not read) and why.
"""

from __future__ import annotations

from bindexp.results.compare import CompareOutcome, CompareSettings, run_compare
from bindexp.results.tables import markdown_table
from bindexp.runs.cli import run_cli


def _run_and_print(settings: CompareSettings) -> int:
    outcome: CompareOutcome = run_compare(settings)
    runs = outcome.tidy["run_id"].nunique() if not outcome.tidy.empty else 0
    left_out = f" (why: {outcome.out_dir / 'left_out.csv'})" if outcome.skipped else ""
    print(f"{runs} eval runs, {len(outcome.grids)} averaged patch grids, {len(outcome.training)} training runs, "
          f"{len(outcome.skipped)} runs left out{left_out}")
    if not outcome.tidy.empty:
        print(markdown_table(outcome.aggregate, settings.by))
    for averaged in outcome.grids:
        print(f"patch grid {averaged.key}: mean of {len(averaged.run_ids)} runs")
    print(f"written to {outcome.out_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(CompareSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
