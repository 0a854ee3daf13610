"""Attention run (job_type `attention`): which heads read which role, and which of them matter.

    outcome = run_attention(AttentionSettings(model="smollm2-135m", hops=2, seq_len=6))
    outcome.grids["final"].to_frame(); outcome.routing

Programs: the originals of the patch runner's pairs (systematic, answered right on both sides by
default). Per destination (final, query_var): mean attention per layer x head to each role, with
95% intervals over programs. Routing table: per destination and source role (one per hop of the
chain), the top-k heads by mean attention, each confirmed two ways over the same pairs: patching
that head's output at the destination with the counterfactual run's (exact method, `head` site:
normalized effect and IIA), and knocking out that one head's attention edge from the destination
to the source (the answer's logit drop with its 95% interval, and the accuracy left). Weights need eager attention; a model loaded with another implementation
is switched to eager for these forwards only, and the summary says so.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pandas as pd

from bindexp.errors import InputError
from bindexp.interventions.attention import ATTENTION_METRIC, eager_attention, role_attention, routing_heads
from bindexp.interventions.exact import patch_cells
from bindexp.interventions.grid import Grid
from bindexp.interventions.knockout import head_edge_knockout
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.runs.analysis import (head_panels, pairs_and_plan, prepare, save_figure, save_grid,
                                   sequences_and_roles, write_table)
from bindexp.runs.analysis_settings import AttentionSettings
from bindexp.runs.folder import ATTENTION_CELLS_FILE, ATTENTION_HEATMAP_FILE, ROUTING_FILE
from bindexp.runs.tracking import Tracker
from bindexp.stats import sample_interval


@dataclasses.dataclass
class AttentionOutcome:
    grids: dict[str, Grid]  # destination -> axes ("layer", "role", "head"), metric "attention"
    # destination, source, hop, rank, layer, head, attention (+ CI, n); head_patch_effect, head_patch_iia;
    # knockout_logit_drop (+ knockout_ci_low, knockout_ci_high, knockout_n), knockout_accuracy
    routing: pd.DataFrame
    summary: dict[str, Any]
    out_dir: Path


def hop_of(role: str) -> int | None:
    """The chain hop a role belongs to: root_value and chain1_* -> 1, chain<k>_* -> k."""
    if role == "root_value":
        return 1
    match = re.fullmatch(r"chain(\d+)_(lhs|rhs|end)", role)
    return int(match.group(1)) if match else None


def routing_sources(settings: AttentionSettings, columns: list[str]) -> list[str]:
    """The settings' sources, or every chain role among the columns (the hops' reads)."""
    if settings.routing_sources is not None:
        unknown = [s for s in settings.routing_sources if s not in columns]
        if unknown:
            raise InputError(f"routing source {unknown[0]!r} is not a role of these programs ({', '.join(columns)})")
        return list(settings.routing_sources)
    return [c for c in columns if hop_of(c) is not None]


def routing_table(grids: dict[str, Grid], sources: list[str], k: int) -> pd.DataFrame:
    frames = []
    for destination, grid in grids.items():
        for source in sources:
            table = routing_heads(grid, source, k).dropna(subset=["attention"])
            frames.append(table.assign(destination=destination, source=source, hop=hop_of(source),
                                       rank=range(1, len(table) + 1)))
    columns = ["destination", "source", "hop", "rank", "layer", "head", "attention", "ci_low", "ci_high", "n"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def confirm_by_head_patching(plan, routing: pd.DataFrame, settings: AttentionSettings) -> pd.DataFrame:
    """Each routing head's output patched at its destination (counterfactual run's value)."""
    only = {(int(r.layer), r.destination, int(r.head)) for r in routing.itertuples()}
    grid = patch_cells(plan, only=only, cells_per_forward=settings.batch_size, pairs_per_chunk=settings.pairs_per_chunk)
    layers, columns = grid.labels["layer"], grid.labels["role"]
    effect, iia = [], []
    for r in routing.itertuples():
        cell = (layers.index(int(r.layer)), columns.index(r.destination), int(r.head))
        effect.append(float(grid.mean["normalized_effect"][cell]))
        iia.append(float(grid.mean["iia"][cell]))
    return routing.assign(head_patch_effect=effect, head_patch_iia=iia)


def confirm_by_knockout(plan, routing: pd.DataFrame, settings: AttentionSettings) -> pd.DataFrame:
    """Each routing head's edge destination -> source blocked in that head alone: the answer's
    logit drop (mean, 95% t interval over pairs) and the accuracy left among the candidates."""
    edges = [(int(r.layer), int(r.head), r.destination, r.source) for r in routing.itertuples()]
    implementation = getattr(plan.lm.model.config, "_attn_implementation", None)
    if implementation in ("eager", "sdpa"):
        values = head_edge_knockout(plan, edges, cells_per_forward=settings.batch_size)
    else:  # flash attention takes no mask: knock out under eager, as the weights were read
        with eager_attention(plan.lm.model):
            values = head_edge_knockout(plan, edges, cells_per_forward=settings.batch_size)
    drop, low, high, count = sample_interval(values["logit_drop"], axis=0)
    accuracy = sample_interval(values["accuracy"], axis=0)[0]
    return routing.assign(knockout_logit_drop=drop, knockout_ci_low=low, knockout_ci_high=high,
                          knockout_accuracy=accuracy, knockout_n=count.astype(int))


def run_attention(settings: AttentionSettings, cache: ModelCache = MODEL_CACHE) -> AttentionOutcome:
    lm, shots = prepare(settings, cache)
    loaded_with = getattr(lm.model.config, "_attn_implementation", None)
    with Tracker(settings, "attention") as tracker:
        tracker.update_config({"model_info": lm.describe()})
        pairs, looked_at, plan = pairs_and_plan(lm, settings, shots, site="head")
        missing = [d for d in settings.destinations if d not in plan.labels]
        if missing:
            raise InputError(f"destination {missing[0]!r} is not a role of these programs ({', '.join(plan.labels)})")
        sequences, roles = sequences_and_roles(plan)
        grids = role_attention(lm, sequences, roles, settings.destinations, plan.labels, prefix=plan.prefix,
                               progress=settings.progress)
        routing = routing_table(grids, routing_sources(settings, plan.labels), settings.top_k)
        if settings.confirm in ("head", "both") and not routing.empty:
            routing = confirm_by_head_patching(plan, routing, settings)
        if settings.confirm in ("knockout", "both") and not routing.empty:
            routing = confirm_by_knockout(plan, routing, settings)
        metadata = settings.model_dump(mode="json")
        files = []
        for destination, grid in grids.items():
            files += save_grid(tracker, destination, grid, metadata)
            figure = head_panels(grid, ATTENTION_METRIC, f"{lm.name}: mean attention from {destination} "
                                                         f"({len(sequences)} programs)")
            files.append(save_figure(tracker, f"attention_{destination}", figure,
                                     ATTENTION_HEATMAP_FILE.format(destination=destination)))
        cells = pd.concat([g.to_frame().assign(destination=d) for d, g in grids.items()], ignore_index=True)
        files.append(write_table(tracker, "attention", cells, ATTENTION_CELLS_FILE))
        files.append(write_table(tracker, "routing_heads", routing, ROUTING_FILE))
        summary = {"programs": len(sequences), "pairs_looked_at": looked_at,
                   "attn_implementation_loaded": loaded_with, "attention_read_with": "eager",
                   "switched_to_eager": loaded_with != "eager", "routing": _routing_summary(routing)}
        tracker.write_summary(summary)
        tracker.log_artifact("attention", files, metadata, keep_folders=True)
        return AttentionOutcome(grids, routing, summary, tracker.out_dir)


def _routing_summary(routing: pd.DataFrame) -> dict[str, Any]:
    """destination -> source -> the top head ("layer.head"), its attention, head-patch effect and
    knockout logit drop (those that were measured)."""
    out: dict[str, Any] = {}
    for row in routing[routing["rank"] == 1].to_dict("records"):
        entry = {"head": f"{row['layer']}.{row['head']}", "attention": row["attention"]}
        for key in ("head_patch_effect", "knockout_logit_drop"):
            if key in row:
                entry[key] = None if pd.isna(row[key]) else row[key]
        out.setdefault(row["destination"], {})[row["source"]] = entry
    return out
