"""Mechanism over training: the patch grid by role on several checkpoints of a training run; one W&B
run (job_type `over_training`) with the metric per role against the training step.

    python scripts/checkpoints.py --checkpoints=outputs/checkpoints/cpu0 --steps=all --hops=2 --num_programs=20
    python scripts/checkpoints.py --checkpoints=outputs/checkpoints/cpu0 "--steps=[1000, 5000, best]" --site=attn_out

The patch settings are those of scripts/patch.py (site, method, counterfactual, hops, num_programs ...);
program settings not given (seq_len, spacing, distractor chains) are the training run's.
Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable.
"""

from __future__ import annotations

from bindexp.io.folder import RunFolder
from bindexp.jobs.over_training import OverTrainingSettings
from bindexp.runs.cli import run_cli
from bindexp.vocab import PHASE_KEYS


def _run_and_print(settings: OverTrainingSettings) -> None:
    from bindexp.jobs.over_training import run_over_training

    outcome = run_over_training(settings)
    summary = outcome.summary
    metric = summary["metric"]
    roles = list(dict.fromkeys(r for s in summary["by_step"].values() for r in s["best_layer_by_column"]))
    print(f"\n{metric} (best over layers) by role at each checkpoint of {settings.checkpoints}:")
    widths = [max(14, len(role)) for role in roles]
    print(f"{'step':>8}  " + "  ".join(f"{role:>{w}}" for role, w in zip(roles, widths)) + f"  {'handoff layer':>13}")
    for step, s in summary["by_step"].items():
        best = s["best_layer_by_column"]
        cells = [f"{best[r][metric]:.3f} (L{best[r]['peak_layer']})" if r in best else "-" for r in roles]
        handoff = s.get("handoff_layer")
        print(f"{step:>8}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths))
              + f"  {'-' if handoff is None else handoff:>13}")
    phases = {k: summary[k] for k in PHASE_KEYS}
    print(f"training phases: {phases}; plot: {RunFolder(outcome.out_dir).over_training_plot}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(OverTrainingSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
