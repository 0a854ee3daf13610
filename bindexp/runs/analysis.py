"""What the analysis runners (attention, lens, subspace, locate) share: checks before any model or
W&B work, the pairs (the patch runner's own selection), writing grids, tables, figures and
training curves through the run's Tracker and RunFolder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bindexp.interventions.results.grid import Grid
from bindexp.interventions.engine.plan import GridPlan, plan_grid
from bindexp.models.cache import ModelCache
from bindexp.models.loading import LoadedModel, check_model_name
from bindexp.runs.analysis_settings import AnalysisSettings
from bindexp.runs.patch import candidate_pairs, check_layers, choose_pairs, patch_shots
from bindexp.runs.tracking import Tracker
from bindexp.stats import wilson_interval
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.program import Program
from bindexp.tasks.prompts import require_answer_next


def prepare(settings: AnalysisSettings, cache: ModelCache) -> tuple[LoadedModel, list[Program]]:
    """The model and few-shot examples, after every check that can fail without a model
    (impossible requests fail before any model loads or W&B run is made)."""
    check_model_name(settings.model)
    require_answer_next(settings.template)
    shots = patch_shots(settings)
    candidate_pairs(settings, 1, shots)
    lm = cache.get(settings.model, **settings.model_kwargs())
    check_layers(settings, lm.n_layers)
    return lm, shots


def pairs_and_plan(lm: LoadedModel, settings: AnalysisSettings, shots: Sequence[Program], *,
                   site: str = "resid_pre") -> tuple[list[CounterfactualPair], int, GridPlan]:
    """The patch runner's pairs for these settings (and how many candidates were looked at), and
    their plan (tokens, role -> position maps, the shared prefix's cache). The prefix stops before
    every program's first role token, so reads at any role (attention, lens, subspace sites) and
    writes from the counterfactual run both lie after it."""
    prefix_until = "columns"
    pairs, looked_at = choose_pairs(lm, settings, list(shots))
    plan = plan_grid(lm, pairs, site=site, shots=shots, template=settings.template, columns="roles",
                     prefix_until=prefix_until)
    return pairs, looked_at, plan


def sequences_and_roles(plan: GridPlan) -> tuple[list[list[int]], list[dict[str, int]]]:
    """The clean prompts' token ids and their role -> position maps."""
    return [t.ids for t in plan.tokenized], [plan.column_map(t) for t in plan.tokenized]


def save_grid(tracker: Tracker, name: str, grid: Grid, metadata: dict[str, Any]) -> list[Path]:
    """The grid in grids/<name>/ (what `Grid.load` reads); its table logged as `<name>`."""
    arrays, sidecar = grid.save(tracker.folder.analysis_grid(name), metadata)
    return [arrays, sidecar]


def write_table(tracker: Tracker, key: str, frame: Any, filename: str) -> Path:
    """A DataFrame as CSV in the run folder and as a W&B table."""
    path = tracker.folder.file(filename)
    frame.to_csv(path, index=False)
    tracker.log_table(key, frame.astype(object).where(frame.notna(), None))
    return path


def save_figure(tracker: Tracker, key: str, figure: Any, filename: str) -> Path:
    path = tracker.folder.file(filename)
    figure.savefig(path, dpi=110)
    tracker.log_image(key, path)
    return path


def write_pairs(path: Path, pairs: Sequence[Any]) -> Path:
    """Pairs (CounterfactualPair, or anything with `.pair`) as JSON lines."""
    with open(path, "w") as handle:
        for item in pairs:
            handle.write(json.dumps(getattr(item, "pair", item).to_dict()) + "\n")
    return path


def proportion_interval(grid: Grid, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(successes, low, high) per cell of a 0/1 metric (IIA, top-1): 95% Wilson bounds from the
    cell's mean and count."""
    mean, count = np.nan_to_num(grid.mean[metric]), grid.counts.get(metric, grid.n)
    successes = np.rint(mean * count).astype(int)
    low, high = np.full(mean.shape, np.nan), np.full(mean.shape, np.nan)
    for index in np.ndindex(*mean.shape):
        low[index], high[index] = wilson_interval(int(successes[index]), int(count[index]))
    return successes, low, high


def head_panels(grid: Grid, metric: str, title: str, roles: Sequence[str] | None = None):
    """One panel per role: layer x head heatmap of a ("layer", "role", "head") grid (no pyplot)."""
    from matplotlib.figure import Figure

    roles = list(roles or grid.labels["role"])
    values = grid.mean[metric]
    columns = min(4, len(roles))
    rows = -(-len(roles) // columns)
    figure = Figure(figsize=(3.2 * columns + 1.0, 2.6 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    for ax in axes.flat[len(roles):]:
        ax.set_visible(False)
    for ax, role in zip(axes.flat, roles):
        image = ax.imshow(values[:, grid.labels["role"].index(role), :], aspect="auto", origin="lower",
                          cmap="viridis", vmin=0.0, vmax=top)
        ax.set(title=role, xlabel="head", ylabel="layer")
    figure.colorbar(image, ax=axes.ravel().tolist(), label=metric)
    figure.suptitle(title, fontsize=9)
    return figure
