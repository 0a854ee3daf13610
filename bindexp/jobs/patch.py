"""The patch job: one grid (any method of `bindexp.interventions.methods`) over many pairs, as one
W&B run (job_type `patch`).

    outcome = run_patch(PatchSettings(model="smollm2-135m", hops=2, site="resid_pre"))
    outcome.grid.to_frame(); outcome.grid.plot()
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from bindexp.interventions.methods import MethodResult
from bindexp.interventions.results.grid import Grid
from bindexp.interventions.results.summary import grid_summary, worst_cell
from bindexp.io.grids import write_grid
from bindexp.io.streams import Stream
from bindexp.io.tables import write_csv, write_figure
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.runs.pairs import check_layers, check_pair_lengths, checked_request, choose_pairs
from bindexp.runs.patching import CONTROL_METRIC, compute_grid, effective_min_gap, headline_metric, is_control
from bindexp.runs.settings import PairSettings, PatchMethodGroup
from bindexp.runs.tracking import Tracker
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.registry import get_task


class PatchSettings(PatchMethodGroup, PairSettings):
    """`scripts/patch.py`: where a model carries the value, by causal interventions."""


@dataclasses.dataclass
class PatchOutcome:
    grid: Grid
    summary: dict[str, Any]
    pairs: list[CounterfactualPair]
    out_dir: Path
    run_dir: Path | None


def run_summary(settings: PatchSettings, result: MethodResult, metric: str, pairs: list[CounterfactualPair],
                looked_at: int, dtype: str) -> dict[str, Any]:
    """Everything a patch run's summary says (README: "What the summaries mean")."""
    grid, spec = result.grid, get_task(settings.task)
    kind = spec.counterfactual(settings.counterfactual)
    if is_control(settings) and metric == CONTROL_METRIC:
        summary = {**grid_summary(grid, metric, key="flip_rate_by_column"), "flip_rate_worst_cell": worst_cell(grid, metric)}
    else:
        summary = grid_summary(grid, metric, spec.value_role, handoff=kind.edits_value_role)
    if settings.method == "knockout":  # the decision, not only the probability: LD against the best competitor
        summary["ld_drop_by_column"] = grid_summary(grid, "ld_drop", key="by_column")["by_column"]
    summary.update({"pairs_looked_at": looked_at, "pairs_used": len(pairs), "pairs_dropped": len(grid.info.get("dropped", [])),
                    "pairs_excluded_min_gap": int(grid.info.get("excluded_small_gap", 0)), "min_gap": effective_min_gap(settings),
                    "dtype": dtype})
    if "heuristic_share" in grid.info:
        summary["heuristic_share"] = grid.info["heuristic_share"]
    if "noise_floor" in grid.info:
        summary["noise_floor_pairs"] = grid.info["noise_floor"]["pairs"]
        summary["noise_floor_patched_cells"] = grid.info["noise_floor"]["patched_cells"]
        summary["patched_cells"] = grid.info.get("patched_cells")
    if result.verification is not None:
        for name, value in result.verification.agreement.items():
            summary[name if name == "k" else f"atp_{name}"] = None if isinstance(value, float) and math.isnan(value) else value
        summary["atp_verify_k"] = summary.pop("k")
    return summary


def heatmap_title(settings: PatchSettings, model: str, n_pairs: int) -> str:
    """`model method [site] on task (axes): n counterfactual pairs` (knockout writes no site)."""
    site = f" {settings.site}" if settings.method != "knockout" else f" to {settings.knockout_destination}"
    axes = ", ".join(f"{axis}={getattr(settings, axis)}" for axis in get_task(settings.task).axes)
    return f"{model} {settings.method}{site} on {settings.task} ({axes}): {n_pairs} {settings.counterfactual} pairs"


MAX_HISTORY_COLUMNS = 200  # W&B keys per layer step at most (positions=all on long prompts)


def log_patch_history(tracker: Tracker, grid: Grid, metric: str) -> None:
    """The headline metric per layer as history: step `layer`, one key per column
    (`<metric>/<role or pos N>`, heads averaged), so W&B's default line charts show the effect of
    each role across layers."""
    import numpy as np

    values = grid.mean[metric]
    if values.ndim == 3:
        values = np.nanmean(values, axis=2)
    columns = grid.labels[grid.axes[1]][:MAX_HISTORY_COLUMNS]
    names = [str(c) if grid.axes[1] == "role" else f"pos{c}" for c in columns]
    rows = [{"layer": int(layer), **{name: float(values[i, j]) for j, name in enumerate(names)
                                     if np.isfinite(values[i, j])}}
            for i, layer in enumerate(grid.labels["layer"])]
    tracker.log_steps("layer", rows, metric)


def run_patch(settings: PatchSettings, cache: ModelCache = MODEL_CACHE) -> PatchOutcome:
    """One patching run (job_type `patch`), with a local copy of everything."""
    settings, shots = checked_request(settings)
    lm = cache.get(settings.model, **settings.model_kwargs())
    check_layers(settings, lm.n_layers)  # before any W&B run or pair is made
    check_pair_lengths(lm, settings, shots)
    with Tracker(settings, "patch") as tracker:
        tracker.update_config({"model_info": lm.describe()})
        stream = Stream(tracker.folder.pairs)
        pairs, looked_at = choose_pairs(lm, settings, shots)
        result = compute_grid(lm, settings, pairs, shots, on_pair=stream.append)
        grid = result.grid
        metadata = settings.model_dump(mode="json")
        arrays_path, sidecar_path = write_grid(grid, tracker.out_dir, metadata)
        metric = headline_metric(settings, grid)
        heatmap = write_figure(grid.plot(metric, title=heatmap_title(settings, lm.name, len(pairs))),
                               tracker.folder.heatmap, dpi=120)
        summary = run_summary(settings, result, metric, pairs, looked_at, str(lm.dtype).removeprefix("torch."))
        if result.verification is not None:
            write_csv(result.verification.table, tracker.folder.atp_verify)
            tracker.log_table("atp_verify", result.verification.table)
        tracker.log_headline(summary)  # its numbers as a history step too (default panels, sweep charts)
        tracker.write_summary(summary)
        log_patch_history(tracker, grid, metric)
        tracker.log_table("grid", grid.to_frame())
        tracker.log_image("heatmap", heatmap)
        files = [arrays_path, sidecar_path] + ([stream.path] if stream.path.exists() else [])
        tracker.log_artifact("patch-grid", files, detail=settings.site if settings.method != "knockout" else "knockout")
        return PatchOutcome(grid, summary, pairs, tracker.out_dir, tracker.run_dir)
