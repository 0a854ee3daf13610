"""Where does the model carry the value? One patch grid over many pairs; one W&B run (job_type `patch`).

    python scripts/patch.py --model=smollm2-135m --hops=2 --seq_len=16 --num_programs=20 --seed=0 \
        --site=resid_pre --method=exact --counterfactual=root_value
    python scripts/patch.py --model=smollm2-135m --task=counter --seq_len=5 --counterfactual=item_value

Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable.
"""

from __future__ import annotations

from bindexp.jobs.patch import PatchSettings, run_patch
from bindexp.runs.cli import run_cli
from bindexp.tasks.registry import get_task


def _run_and_print(settings: PatchSettings) -> None:
    outcome = run_patch(settings)
    summary = outcome.summary
    axes = "".join(f", {axis}={getattr(settings, axis)}" for axis in get_task(settings.task).axes)
    where = (f"attention to {settings.knockout_destination} blocked" if settings.method == "knockout"
             else f"site {settings.site}")
    print(f"\n{settings.method} patching of {settings.model} on {settings.task}, {where}, "
          f"{summary['pairs_used']} {settings.counterfactual} pairs{axes}:")
    control = "flip_rate_by_column" in summary
    print(f"{'column':<20}{'layers within the best CI' if not control else 'layers within the worst CI':>28}"
          f"{'peak':>6}{summary['metric']:>20}")
    for column, best in summary["flip_rate_by_column" if control else "best_layer_by_column"].items():
        first, last = best["layer_range"]
        span = f"{first}-{last}" if first != last else f"{first}"
        flag = " (within noise floor)" if best.get("within_noise_floor") else ""
        print(f"{column:<20}{span:>28}{best['peak_layer']:>6}{best[summary['metric']]:>20.3f}{flag}")
    if control and summary.get("flip_rate_worst_cell"):
        worst = summary["flip_rate_worst_cell"]
        where = ", ".join(f"{key} {value}" for key, value in worst.items() if key not in ("flip", "ci"))
        print(f"control: the answer flips in {worst['flip']:.0%} of pairs at worst ({where})")
    if "handoff_layer" in summary:
        print(f"effect passes from {get_task(settings.task).value_role} to final at layer: {summary['handoff_layer']}")
    if "heuristic_share" in summary:
        print(f"pairs the line-1/line-2 heuristic solves: {summary['heuristic_share']:.0%}")
    if summary.get("pairs_excluded_min_gap"):
        print(f"pairs left out by min_gap={summary['min_gap']}: {summary['pairs_excluded_min_gap']}")
    print(f"heatmap: {outcome.out_dir / 'heatmap.png'}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(PatchSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
