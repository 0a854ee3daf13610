"""The skeleton every analysis job (attention, lens, subspace, locate) runs through, and what they
share below it: checks before any model or W&B work, the pairs (the patch run's own selection,
`bindexp.runs.pairs`) and their plan, and writing grids, tables, figures and pair files through
the run's Tracker and `bindexp.io`.

An analysis is an `Analysis`: its job type and three hooks -- `compute` (the measurement, returning
an object), `write` (its files, returned for the artifact) and `summarize` (the summary) -- plus
optional checks before and after the model loads. `run_analysis` does the rest in one order:
checks, model, Tracker, model description, compute, write, summary, artifact, outcome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bindexp.interventions.engine.plan import GridPlan, plan_grid
from bindexp.interventions.results.grid import Grid
from bindexp.io.grids import write_grid
from bindexp.io.streams import write_lines
from bindexp.io.tables import write_csv, write_figure
from bindexp.models.cache import ModelCache
from bindexp.models.loading import LoadedModel, check_model_name
from bindexp.runs.pairs import candidate_pairs, check_pair_lengths, choose_pairs, patch_shots
from bindexp.runs.settings import PairSettings
from bindexp.runs.tracking import Tracker, check_run_folder
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.program import Program
from bindexp.tasks.prompts import require_answer_next

NAME_DEFAULTS = {"site": "resid_pre", "method": "exact"}


@dataclasses.dataclass
class AnalysisRun:
    """What a hook sees: the settings, the model, the few-shot examples and the run's Tracker."""

    settings: Any
    lm: LoadedModel
    shots: list[Program]
    tracker: Tracker

    def pairs_and_plan(self, site: str = "resid_pre", prefix_until: str = "columns"
                       ) -> tuple[list[CounterfactualPair], int, GridPlan]:
        return pairs_and_plan(self.lm, self.settings, self.shots, site=site, prefix_until=prefix_until)

    def write_grid(self, name: str, grid: Grid, metadata: dict[str, Any]) -> list[Path]:
        """The grid in grids/<name>/ (what `Grid.load` reads)."""
        return list(write_grid(grid, self.tracker.folder.analysis_grid(name), metadata))

    def write_table(self, key: str, frame: Any, filename: str, logged: Any = None) -> Path:
        """A DataFrame as CSV in the run folder and as a W&B table (`logged`: only these rows of it
        in W&B, for tables too long for one)."""
        path = write_csv(frame, self.tracker.folder.file(filename))
        logged = frame if logged is None else logged
        self.tracker.log_table(key, logged.astype(object).where(logged.notna(), None))
        return path

    def write_figure(self, key: str, figure: Any, filename: str) -> Path:
        """A figure as PNG in the run folder and as a W&B image."""
        path = write_figure(figure, self.tracker.folder.file(filename), dpi=110)
        self.tracker.log_image(key, path)
        return path

    def write_pairs(self, filename: str, pairs: Sequence[Any]) -> Path:
        """Pairs (CounterfactualPair, or anything with `.pair`) as JSON lines."""
        return write_lines(self.tracker.folder.file(filename), [getattr(p, "pair", p).to_dict() for p in pairs])


@dataclasses.dataclass(frozen=True)
class Analysis:
    """job_type: W&B's job type and the artifact's kind.
    compute(run) -> result; write(run, result) -> files for the artifact; summarize(run, result) ->
    summary; outcome(run, result, summary) -> what the runner returns.
    check(settings, shots): refuse a request before the model loads; check_model(settings, lm): after.
    config(settings): config entries beside the model's description.
    metadata(run, result): the artifact's metadata (default: the settings).
    name_defaults: what the run's name and tags say for settings the job does not carry: the analyses
    were named with the patch settings' defaults they once inherited (`resid_pre exact`), and their
    W&B names and tags stay as they were."""

    job_type: str
    compute: Callable[[AnalysisRun], Any]
    write: Callable[[AnalysisRun, Any], list[Path]]
    summarize: Callable[[AnalysisRun, Any], dict[str, Any]]
    outcome: Callable[[AnalysisRun, Any, dict[str, Any]], Any]
    check: Callable[[Any, list[Program]], None] | None = None
    check_model: Callable[[Any, LoadedModel], None] | None = None
    config: Callable[[Any], dict[str, Any]] | None = None
    metadata: Callable[[AnalysisRun, Any], dict[str, Any]] | None = None
    name_defaults: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(NAME_DEFAULTS))


def run_analysis(analysis: Analysis, settings: PairSettings, cache: ModelCache) -> Any:
    """One analysis as one W&B run (job_type `analysis.job_type`), with a local copy of everything."""
    if analysis.check is not None:
        analysis.check(settings, patch_shots(settings))
    lm, shots = prepare(settings, cache)
    if analysis.check_model is not None:
        analysis.check_model(settings, lm)
    with Tracker(settings, analysis.job_type, name_defaults=analysis.name_defaults) as tracker:
        tracker.update_config({"model_info": lm.describe(), **(analysis.config(settings) if analysis.config else {})})
        run = AnalysisRun(settings, lm, shots, tracker)
        result = analysis.compute(run)
        files = analysis.write(run, result)
        summary = analysis.summarize(run, result)
        tracker.write_summary(summary)
        metadata = analysis.metadata(run, result) if analysis.metadata else settings.model_dump(mode="json")
        tracker.log_artifact(analysis.job_type, [f for f in files if f.exists()], metadata, keep_folders=True)
        return analysis.outcome(run, result, summary)


def prepare(settings: PairSettings, cache: ModelCache) -> tuple[LoadedModel, list[Program]]:
    """The model and few-shot examples, after every check that can fail without a model
    (impossible requests fail before any model loads or W&B run is made)."""
    check_model_name(settings.model)
    require_answer_next(settings.template)
    shots = patch_shots(settings)
    candidate_pairs(settings, 1, shots)
    check_run_folder(settings)
    lm = cache.get(settings.model, **settings.model_kwargs())
    check_pair_lengths(lm, settings, shots)
    return lm, shots


def pairs_and_plan(lm: LoadedModel, settings: PairSettings, shots: Sequence[Program], *,
                   site: str = "resid_pre", prefix_until: str = "columns"
                   ) -> tuple[list[CounterfactualPair], int, GridPlan]:
    """The patch runner's pairs for these settings (and how many candidates were looked at), and
    their plan (tokens, role -> position maps, the shared prefix's cache). By default the prefix
    stops before every program's first role token, so reads at any role (attention, lens, subspace
    sites) and writes from the counterfactual run both lie after it; "edit": before the first
    counterfactual edit (methods that only write the counterfactual's values)."""
    pairs, looked_at = choose_pairs(lm, settings, list(shots))
    plan = plan_grid(lm, pairs, site=site, shots=shots, template=settings.template, columns="roles",
                     prefix_until=prefix_until)
    return pairs, looked_at, plan


def sequences_and_roles(plan: GridPlan) -> tuple[list[list[int]], list[dict[str, int]]]:
    """The clean prompts' token ids and their role -> position maps."""
    return [t.ids for t in plan.tokenized], [plan.column_map(t) for t in plan.tokenized]
