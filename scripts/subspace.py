"""In which subspace is the value carried? DAS for each k, boundless DAS and the PCA + L1 probe
subspace at one (layer, role) site, beside their controls (difference-PCA, random subspaces, the
whole residual): held-out IIA with Wilson intervals; one W&B run (job_type `subspace`).

    python scripts/subspace.py --model=smollm2-135m --hops=2 --seq_len=6 --shots=3 \
        --role=root_value --ks="[1, 4, 16, 64]" --n_train=64 --n_heldout=20 --steps=200

Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable.
"""

from __future__ import annotations

from bindexp.jobs.subspace import SubspaceSettings, run_subspace
from bindexp.runs.cli import run_cli
from bindexp.stats import display


def _run_and_print(settings: SubspaceSettings) -> None:
    outcome = run_subspace(settings)
    summary, frame = outcome.summary, outcome.frame
    print(f"\nsubspace interchange of {settings.model} at layer {outcome.layer}, {summary['role']} "
          f"({summary['n_train']} training, {summary['n_heldout']} held-out pairs; IIA with 95% Wilson intervals; "
          "shares of the held-out activations' variance and of |x_cf - x|^2):")
    columns = ["method", "k", "iia", "iia_ci_low", "iia_ci_high", "n_heldout", "variance_share", "difference_share"]
    print(frame[frame["method"] != "random"][columns].map(display).to_string(index=False))
    for k, entry in summary["random"].items():
        print(f"random {k}: mean IIA {display(entry['iia_mean'])} (min {display(entry['iia_min'])}, max "
              f"{display(entry['iia_max'])}) over {entry['seeds']} seeds")
    if summary.get("edited_token_note"):
        print(f"note: {summary['edited_token_note']}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(SubspaceSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
