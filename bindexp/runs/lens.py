"""Logit-lens run (job_type `lens`): from which layer is the answer readable, and where?

    outcome = run_lens(LensSettings(model="smollm2-135m", hops=2, seq_len=6))
    outcome.grid.to_frame(); outcome.readable

Programs: the originals of the patch runner's pairs (the counterfactual answer is the pair's).
Per layer x role: the answer's and the counterfactual answer's rank and probability (full
vocabulary) through the final norm and unembedding, with 95% intervals over programs. Layer
index l < n_layers is the residual entering layer l; index n_layers is the last layer's output
(the model's own logits).

Readable layer (final token): the first layer L such that at L *and every later layer* the answer
is the top-1 token in more than `readable_threshold` of the programs. Its range applies the same
rule to the two ends of each layer's 95% Wilson interval of that share: `readable_layer_low` uses
the upper ends (the earliest layer the data allow), `readable_layer_high` the lower ends (the
latest). None when no layer qualifies.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bindexp.interventions.results.grid import Grid
from bindexp.interventions.readouts.lens import role_lens
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.runs.analysis import (pairs_and_plan, prepare, proportion_interval, save_figure, save_grid,
                                   sequences_and_roles, write_table)
from bindexp.runs.analysis_settings import LensSettings
from bindexp.io.folder import HEATMAP_FILE, LENS_CELLS_FILE, LENS_CURVE_FILE
from bindexp.runs.tracking import Tracker


@dataclasses.dataclass
class LensOutcome:
    grid: Grid  # axes ("layer", "role"); layer n_layers = after the last layer
    readable: dict[str, Any]  # readable_layer (+ low, high), the final token's top-1 share per layer
    summary: dict[str, Any]
    out_dir: Path


def first_layer_above(shares: Sequence[float], layers: Sequence[int], threshold: float) -> int | None:
    """The first layer from which every share (this layer's and all later ones) exceeds threshold."""
    above = np.asarray(shares, dtype=float) > threshold
    for i in range(len(layers)):
        if above[i:].all():
            return layers[i]
    return None


def readable_layer(grid: Grid, threshold: float, role: str = "final") -> dict[str, Any]:
    """The readable layer of `role` and its range (see the module docstring)."""
    column = grid.labels["role"].index(role)
    _, low, high = proportion_interval(grid, "top1_answer")
    shares = grid.mean["top1_answer"][:, column]
    layers = grid.labels["layer"]
    return {"readable_layer": first_layer_above(shares, layers, threshold),
            "readable_layer_low": first_layer_above(high[:, column], layers, threshold),
            "readable_layer_high": first_layer_above(low[:, column], layers, threshold),
            "readable_threshold": threshold,
            "top1_share_by_layer": [None if np.isnan(v) else float(v) for v in shares],
            "top1_ci_low_by_layer": [None if np.isnan(v) else float(v) for v in low[:, column]],
            "top1_ci_high_by_layer": [None if np.isnan(v) else float(v) for v in high[:, column]]}


def lens_curve(grid: Grid, readable: dict[str, Any], title: str, role: str = "final"):
    """The role's answer / counterfactual probability and top-1 share against layer (no pyplot)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 3.6))
    ax = figure.subplots()
    column = grid.labels["role"].index(role)
    layers = np.asarray(grid.labels["layer"])
    for metric, label in (("p_answer", "p(answer)"), ("p_counterfactual", "p(counterfactual answer)")):
        ax.plot(layers, grid.mean[metric][:, column], marker="o", markersize=3, label=label)
        ax.fill_between(layers, grid.ci_low[metric][:, column], grid.ci_high[metric][:, column], alpha=0.2)
    ax.plot(layers, readable["top1_share_by_layer"], marker="s", markersize=3, label="answer top-1 (share)")
    ax.fill_between(layers, np.array(readable["top1_ci_low_by_layer"], dtype=float),
                    np.array(readable["top1_ci_high_by_layer"], dtype=float), alpha=0.2)
    ax.axhline(readable["readable_threshold"], color="grey", linestyle=":", linewidth=1)
    if readable["readable_layer"] is not None:
        ax.axvline(readable["readable_layer"], color="black", linestyle="--", linewidth=1,
                   label=f"readable from layer {readable['readable_layer']}")
    ax.set(xlabel=f"layer (resid_pre; {layers[-1]} = last layer's output)", ylabel="mean over programs (95% CI)",
           ylim=(-0.02, 1.02), title=title)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def run_lens(settings: LensSettings, cache: ModelCache = MODEL_CACHE) -> LensOutcome:
    lm, shots = prepare(settings, cache)
    with Tracker(settings, "lens") as tracker:
        tracker.update_config({"model_info": lm.describe()})
        pairs, looked_at, plan = pairs_and_plan(lm, settings, shots)
        sequences, roles = sequences_and_roles(plan)
        answers = [(t.answer.original, t.answer.counterfactual) for t in plan.tokenized]
        grid = role_lens(lm, sequences, roles, answers, plan.labels, prefix=plan.prefix, progress=settings.progress)
        readable = readable_layer(grid, settings.readable_threshold)
        metadata = settings.model_dump(mode="json")
        files = save_grid(tracker, "lens", grid, metadata)
        files.append(write_table(tracker, "lens", grid.to_frame(), LENS_CELLS_FILE))
        title = f"{lm.name}: logit lens at the final token ({len(sequences)} programs)"
        files.append(save_figure(tracker, "lens_final", lens_curve(grid, readable, title), LENS_CURVE_FILE))
        files.append(save_figure(tracker, "heatmap", grid.plot("p_answer", title=f"{lm.name}: p(answer) by lens"),
                                 HEATMAP_FILE))
        last = len(grid.labels["layer"]) - 1
        final = grid.labels["role"].index("final")
        summary = {"programs": len(sequences), "pairs_looked_at": looked_at,
                   **{k: v for k, v in readable.items() if not k.endswith("_by_layer")},
                   "final_top1_share": readable["top1_share_by_layer"][last],
                   "final_p_answer": float(grid.mean["p_answer"][last, final]),
                   "final_rank_answer": float(grid.mean["rank_answer"][last, final]),
                   "layer_axis": f"l < {last}: residual entering layer l; {last}: the last layer's output"}
        tracker.write_summary(summary)
        tracker.log_table("lens_final", _curve_frame(readable, grid.labels["layer"]))
        tracker.log_artifact("lens", files, metadata, keep_folders=True)
        return LensOutcome(grid, readable, summary, tracker.out_dir)


def _curve_frame(readable: dict[str, Any], layers: Sequence[int]):
    import pandas as pd

    return pd.DataFrame({"layer": list(layers), "top1_share": readable["top1_share_by_layer"],
                         "ci_low": readable["top1_ci_low_by_layer"], "ci_high": readable["top1_ci_high_by_layer"]})
