"""Every job bindexp runs, in one table: the job-type vocabulary (W&B's `job_type`, config.json's),
the sweep runner's script table, compare's analysis job types and the docs all derive from it.

A job is one module (its settings class, its run function, its figures) and one line here; its
command line is `scripts/<script>`. Entries are import strings, so reading the table imports
nothing heavy.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any, Literal

Kind = Literal["run", "analysis"]


@dataclasses.dataclass(frozen=True)
class Job:
    """module: where the job lives; settings / run: its settings class and run function there;
    script: its command line (None: none of its own); kind: analysis jobs are compared by their
    summaries' numbers."""

    module: str
    settings: str
    run: str
    script: str | None
    kind: Kind = "run"

    def settings_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.settings)

    def runner(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), self.run)


JOBS: dict[str, Job] = {
    "eval": Job("bindexp.jobs.evaluate", "EvalSettings", "run_eval", "scripts/eval.py"),
    "patch": Job("bindexp.jobs.patch", "PatchSettings", "run_patch", "scripts/patch.py"),
    "robust": Job("bindexp.jobs.robust", "RobustSettings", "find_robust", "scripts/find_robust.py"),
    "compare": Job("bindexp.results.compare", "CompareSettings", "run_compare", "scripts/compare.py"),
    "train": Job("bindexp.jobs.train", "TrainSettings", "run_train", "scripts/train.py"),
    "over_training": Job("bindexp.jobs.over_training", "OverTrainingSettings", "run_over_training",
                         "scripts/checkpoints.py"),
    "attention": Job("bindexp.jobs.attention", "AttentionSettings", "run_attention", "scripts/attention.py", "analysis"),
    "lens": Job("bindexp.jobs.lens", "LensSettings", "run_lens", "scripts/lens.py", "analysis"),
    "subspace": Job("bindexp.jobs.subspace", "SubspaceSettings", "run_subspace", "scripts/subspace.py", "analysis"),
    "locate": Job("bindexp.jobs.locate", "LocateSettings", "run_locate", "scripts/locate.py", "analysis"),
    "path_patch": Job("bindexp.jobs.path_patch", "PathPatchSettings", "run_path_patch", "scripts/path_patch.py",
                      "analysis"),
    "circuit": Job("bindexp.jobs.circuit", "CircuitSettings", "run_circuit", "scripts/circuit.py", "analysis"),
    "hypotheses": Job("bindexp.jobs.hypotheses", "HypothesesSettings", "run_hypotheses", "scripts/hypotheses.py",
                      "analysis"),
}
JOB_TYPES: tuple[str, ...] = tuple(JOBS)  # W&B job_type and config.json's job_type
ANALYSIS_JOB_TYPES: tuple[str, ...] = tuple(name for name, job in JOBS.items() if job.kind == "analysis")
