"""In which subspace is the value carried? DAS for each k and the PCA + L1 probe subspace at one
(layer, role) site, held-out IIA with Wilson intervals; one W&B run (job_type `subspace`).

    python scripts/subspace.py --model=smollm2-135m --hops=2 --seq_len=6 --shots=3 \
        --role=root_value --ks="[1, 4, 16, 64]" --n_train=64 --n_heldout=20 --steps=200

Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable.
"""

from __future__ import annotations

from bindexp.jobs.subspace import SubspaceSettings, run_subspace
from bindexp.runs.cli import run_cli


def _run_and_print(settings: SubspaceSettings) -> None:
    outcome = run_subspace(settings)
    summary = outcome.summary
    print(f"\nsubspace interchange of {settings.model} at layer {outcome.layer}, {settings.role} "
          f"({summary['n_train']} training, {summary['n_heldout']} held-out pairs):")
    print(f"whole residual patched: IIA {summary['resid_patch_iia']:.3f} "
          f"[{summary['resid_patch_iia_ci_low']:.3f}, {summary['resid_patch_iia_ci_high']:.3f}]")
    print(outcome.frame[["method", "k", "iia", "iia_ci_low", "iia_ci_high"]].to_string(index=False,
                                                                                        float_format="%.3f"))


def main(argv: list[str] | None = None) -> int:
    return run_cli(SubspaceSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
