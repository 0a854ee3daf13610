"""Find programs that every listed model answers correctly, for patching on programs all models get.

    python scripts/find_robust.py "--models=[smollm2-135m, Qwen/Qwen3-0.6B]" --hops=2 --seq_len=16 \
        --num_programs=200 --shots=3 --seed=0 --out=outputs/robust/h2-n16.jsonl

The candidates are the programs scripts/eval.py scores with the same settings. Writes a JSON
Lines file (one robust program per line) and <file>.meta.json; also a W&B run (job_type robust).
"""

from __future__ import annotations

from bindexp.jobs.robust import RobustSettings, find_robust
from bindexp.runs.cli import run_cli


def _run_and_print(settings: RobustSettings) -> None:
    outcome = find_robust(settings)
    for row in outcome.counts:
        scored = ", ".join(f"{k[8:-1]} {v}" for k, v in row.items() if k.startswith("correct["))
        print(f"hops={row['hops']} seq_len={row['seq_len']}: {row['robust']} of {row['candidates']} robust "
              f"(correct: {scored})")
    print(f"{len(outcome.programs)} robust programs written to {outcome.path}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(RobustSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
