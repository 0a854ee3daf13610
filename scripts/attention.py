"""Which heads read which role? Mean attention per layer x head from the final token and the query
variable to each role, and the routing heads confirmed by head patching and by knocking out their
attention edge; one W&B run (job_type `attention`).

    python scripts/attention.py --model=smollm2-135m --hops=2 --seq_len=6 --shots=3 --num_programs=20

Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable.
"""

from __future__ import annotations

from bindexp.jobs.attention import AttentionSettings, run_attention
from bindexp.runs.cli import run_cli


def _run_and_print(settings: AttentionSettings) -> None:
    outcome = run_attention(settings)
    summary = outcome.summary
    print(f"\nattention of {settings.model} over {summary['programs']} programs "
          f"(loaded with {summary['attn_implementation_loaded']} attention, read with eager):")
    columns = ["destination", "source", "rank", "layer", "head", "attention"] + [
        c for c in ("head_patch_effect", "knockout_ld_drop", "knockout_logit_drop", "knockout_accuracy")
        if c in outcome.routing]
    print(outcome.routing[outcome.routing["rank"] <= 3][columns].to_string(index=False, float_format="%.3f"))


def main(argv: list[str] | None = None) -> int:
    return run_cli(AttentionSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
