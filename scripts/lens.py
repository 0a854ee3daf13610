"""From which layer is the answer readable? The logit lens per layer x role for the answer and the
counterfactual answer; one W&B run (job_type `lens`).

    python scripts/lens.py --model=smollm2-135m --hops=2 --seq_len=6 --shots=3 --num_programs=20

Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable.
"""

from __future__ import annotations

from bindexp.jobs.lens import LensSettings, run_lens
from bindexp.runs.cli import run_cli


def _run_and_print(settings: LensSettings) -> None:
    outcome = run_lens(settings)
    readable = outcome.readable
    print(f"\nlogit lens of {settings.model} at the final token ({outcome.summary['programs']} programs):")
    print(f"{'layer':>6}{'top-1 share':>13}{'95% CI':>18}")
    for layer, share, low, high in zip(outcome.grid.labels["layer"], readable["top1_share_by_layer"],
                                       readable["top1_ci_low_by_layer"], readable["top1_ci_high_by_layer"]):
        print(f"{layer:>6}{share:>13.3f}     [{low:.3f}, {high:.3f}]")
    print(f"answer readable (the Wilson lower bound of its top-1 share >= {readable['readable_threshold']} from then on) "
          f"from layer {readable['readable_layer']} (earliest the data allow: {readable['readable_layer_low']}; "
          f"undetermined layers: {readable['undetermined_layers'] or 'none'})")


def main(argv: list[str] | None = None) -> int:
    return run_cli(LensSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
