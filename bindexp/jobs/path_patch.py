"""The path_patch job (job_type `path_patch`): which senders reach the answer through a receiver set.

    outcome = run_path_patch(PathPatchSettings(model="smollm2-135m", hops=2, seq_len=6,
                                               receivers=["q:23.0", "v:23.0", "logits"]))
    outcome.grids["q:23.0"].to_frame()      # one row per sender: normalized effect, 95% CI, n

One grid per receiver set (`q:L.H`, `k:L.H`, `v:L.H`, several heads of a layer joined by `+`,
`mlp:L`, `logits`) over every sender before it (the embeddings, every head, every MLP): the
sender's counterfactual output seen only through those receivers
(`bindexp.interventions.methods.path_patching`), over the patch runner's pairs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field, field_validator

from bindexp.errors import InputError
from bindexp.interventions.engine.graph import check_spec
from bindexp.interventions.engine.graph_forward import GraphParts
from bindexp.interventions.methods.path_patching import path_patch
from bindexp.interventions.results.grid import Grid
from bindexp.io.folder import PATH_PATCH_FILE, PATH_PATCH_HEATMAP_FILE
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.plots.circuit import sender_heatmap
from bindexp.runs.analysis import Analysis, AnalysisRun, run_analysis
from bindexp.runs.naming import model_label
from bindexp.runs.patching import is_control
from bindexp.runs.settings import PairSettings, StrList

HEADLINE = "normalized_effect"


class PathPatchSettings(PairSettings):
    """`scripts/path_patch.py`: path patching of every sender into each receiver set."""

    receivers: StrList = Field(["logits"], description="receiver sets, one grid each: q:L.H, k:L.H, v:L.H (heads of "
                                                       "one layer joined by +), mlp:L, logits")
    top_k: int = Field(10, ge=1, description="senders the summary lists per receiver set")
    pairs_per_chunk: int = Field(8, ge=1, description="pairs held in memory at once")

    @field_validator("receivers")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one receiver set")
        for spec in value:
            check_spec(spec)
        return [spec.strip() for spec in value]


@dataclasses.dataclass
class PathPatchOutcome:
    grids: dict[str, Grid]  # receiver set -> grid over the axis "sender"
    table: pd.DataFrame  # every (receiver set, sender) cell
    summary: dict[str, Any]
    out_dir: Path


def check_request(settings: Any, shots) -> None:
    """Path patching normalizes by the clean-to-counterfactual gap: a control kind has none."""
    if is_control(settings):
        raise InputError(f"counterfactual {settings.counterfactual!r} keeps the answer: the normalized effect of "
                         "edge-level methods needs a counterfactual that changes it")


def check_receivers(settings: PathPatchSettings, lm) -> None:
    graph = GraphParts.of(lm).graph  # refuses families the graph forward does not cover
    for spec in settings.receivers:
        graph.receiver_set(spec)


def grid_name(spec: str) -> str:
    """A receiver set as a file and folder name (`v:23.0+23.3` -> `v_23.0+23.3`)."""
    return spec.replace(":", "_")


def cells_table(grids: dict[str, Grid]) -> pd.DataFrame:
    frames = [grid.to_frame().assign(receiver_set=spec) for spec, grid in grids.items()]
    table = pd.concat(frames, ignore_index=True)
    return table[["receiver_set"] + [c for c in table.columns if c != "receiver_set"]]


def _compute(run: AnalysisRun) -> dict[str, Grid]:
    settings = run.settings
    _, _, plan = run.pairs_and_plan(prefix_until="edit")
    return path_patch(plan, settings.receivers, cells_per_forward=settings.batch_size,
                      pairs_per_chunk=settings.pairs_per_chunk, min_gap=settings.min_gap,
                      progress=settings.progress)


def _write(run: AnalysisRun, grids: dict[str, Grid]) -> list[Path]:
    metadata = run.settings.model_dump(mode="json")
    files: list[Path] = []
    for spec, grid in grids.items():
        files += run.write_grid(grid_name(spec), grid, metadata)
        title = f"{model_label(run.lm.name)}: path patching into {spec} ({int(grid.n.max())} pairs)"
        files.append(run.write_figure(f"path_patch_{grid_name(spec)}", sender_heatmap(grid, HEADLINE, title),
                                      PATH_PATCH_HEATMAP_FILE.format(receivers=grid_name(spec))))
    files.append(run.write_table("path_patch", cells_table(grids), PATH_PATCH_FILE))
    return files


def top_senders(grid: Grid, k: int) -> list[dict[str, Any]]:
    """The k senders with the largest |mean normalized effect|: name, mean, 95% interval, n."""
    frame = grid.to_frame().dropna(subset=[HEADLINE])
    frame = frame.reindex(frame[HEADLINE].abs().sort_values(ascending=False).index).head(k)
    return [{"sender": row["sender"], HEADLINE: row[HEADLINE], "ci_low": row[f"{HEADLINE}_ci_low"],
             "ci_high": row[f"{HEADLINE}_ci_high"], "n": int(row["n"])} for _, row in frame.iterrows()]


def _summarize(run: AnalysisRun, grids: dict[str, Grid]) -> dict[str, Any]:
    first = next(iter(grids.values()))
    return {"pairs": int(first.info["pairs"]) - int(first.info["excluded_small_gap"]),
            "pairs_excluded_min_gap": int(first.info["excluded_small_gap"]),
            "patched_cells": sum(int(g.info["patched_cells"]) for g in grids.values()),
            "receiver_sets": {spec: {"receivers": grid.info["receivers"], "top": top_senders(grid, run.settings.top_k)}
                              for spec, grid in grids.items()}}


PATH_PATCH = Analysis("path_patch", _compute, _write, _summarize,
                      outcome=lambda run, grids, summary: PathPatchOutcome(grids, cells_table(grids), summary,
                                                                           run.tracker.out_dir),
                      check=check_request, check_model=check_receivers, name_defaults={})


def run_path_patch(settings: PathPatchSettings, cache: ModelCache = MODEL_CACHE) -> PathPatchOutcome:
    return run_analysis(PATH_PATCH, settings, cache)
