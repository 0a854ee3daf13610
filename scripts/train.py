"""Train a transformer from scratch on binding programs; one W&B run (job_type `train`).

    python scripts/train.py --preset=cpu                       # 4 layers, d 128, 8-line programs, CPU
    python scripts/train.py --preset=paper --seed=1            # the paper's 12-layer model, for a GPU
    python scripts/train.py --preset=cpu --checkpoint_dir=outputs/ckpt/cpu0 --resume=True  # after a kill

Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable;
explicit settings override the preset's.
"""

from __future__ import annotations

from bindexp.jobs.train import TrainSettings
from bindexp.runs.cli import run_cli


def _run(settings: TrainSettings) -> None:
    from bindexp.jobs.train import run_train

    run_train(settings)


def main(argv: list[str] | None = None) -> int:
    return run_cli(TrainSettings, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
