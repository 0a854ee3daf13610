"""Which senders reach the answer through a receiver set? Path patching of every sender (the
embeddings, every head, every MLP) into each receiver set (a head's q, k or v input, an MLP's input,
the logits): one grid per set with 95% intervals over pairs; one W&B run (job_type `path_patch`).

    python scripts/path_patch.py --model=smollm2-135m --hops=2 --seq_len=6 --shots=3 --num_programs=20 \
        "--receivers=[q:23.0, v:23.0, logits]"

Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable.
"""

from __future__ import annotations

from bindexp.jobs.path_patch import PathPatchSettings, run_path_patch
from bindexp.runs.cli import run_cli


def _run_and_print(settings: PathPatchSettings) -> None:
    outcome = run_path_patch(settings)
    print(f"\npath patching on {settings.model} ({outcome.summary['pairs']} pairs):")
    for spec, entry in outcome.summary["receiver_sets"].items():
        top = ", ".join(f"{row['sender']} {row['normalized_effect']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
                        for row in entry["top"][:5])
        print(f"  into {spec}: {top}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(PathPatchSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
