"""The attention job (job_type `attention`): which heads read which role, and which of them matter.

    outcome = run_attention(AttentionSettings(model="smollm2-135m", hops=2, seq_len=6))
    outcome.grids["final"].to_frame(); outcome.routing

Programs: the originals of the patch runner's pairs (systematic, answered right on both sides by
default). Per destination (final, query_var): mean attention per layer x head to each role, with
95% intervals over programs. Routing table: per destination and source role (one per hop of the
chain), the top-k heads by mean attention, each confirmed two ways over the same pairs: patching
that head's output at the destination with the counterfactual run's (exact method, `head` site:
normalized effect and IIA), and knocking out that one head's attention edge from the destination
to the source (the drop in LD = answer logit minus the best competing candidate's logit, with its
95% interval; the answer's raw logit drop beside it; and the accuracy left, with its Wilson
interval). Weights need
eager attention; a model loaded with another implementation is switched to eager for these
forwards only, and the summary says so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from bindexp.errors import InputError
from bindexp.interventions.methods.exact import patch_cells
from bindexp.interventions.methods.knockout import head_edge_knockout
from bindexp.interventions.readouts.attention import ATTENTION_METRIC, eager_attention, role_attention, routing_heads
from bindexp.interventions.results.grid import Grid
from bindexp.io.folder import ATTENTION_CELLS_FILE, ATTENTION_HEATMAP_FILE, ROUTING_FILE
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.plots.analyses import head_panels
from bindexp.runs.analysis import Analysis, AnalysisRun, run_analysis, sequences_and_roles
from bindexp.runs.settings import PairSettings, StrList, none_list
from bindexp.stats import sample_interval, wilson_bounds
from bindexp.tasks.registry import get_task


class AttentionSettings(PairSettings):
    """`scripts/attention.py`: mean attention per layer x head from destination tokens to each role,
    the routing heads, confirmed by patching their output (the exact method's `head` site) and by
    knocking out their attention edge."""

    destinations: StrList = Field(["final", "query_var"], description="tokens whose attention is read")
    routing_sources: StrList | None = Field(None, description="roles the routing table ranks heads for "
                                                              "(None: the chain's roles, one per hop)")
    top_k: int = Field(5, ge=1, description="routing heads per (destination, source)")
    confirm: Literal["head", "knockout", "both", "none"] = Field(
        "both", description="head: patch each routing head's output at its destination with the "
                            "counterfactual's; knockout: block that head's edge destination -> source")

    pairs_per_chunk: int = Field(8, ge=1, description="pairs held in memory at once (head patching)")

    @field_validator("routing_sources", mode="before")
    @classmethod
    def _none(cls, value):
        return none_list(value)

    @field_validator("destinations")
    @classmethod
    def _some_destination(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one destination role")
        return value


@dataclasses.dataclass
class AttentionOutcome:
    grids: dict[str, Grid]  # destination -> axes ("layer", "role", "head"), metric "attention"
    # destination, source, hop, rank, layer, head, attention (+ CI, n); head_patch_effect, head_patch_iia;
    # knockout_ld_drop, knockout_logit_drop (each + _ci_low, _ci_high), knockout_accuracy (+ Wilson), knockout_n
    routing: pd.DataFrame
    summary: dict[str, Any]
    out_dir: Path


def routing_sources(settings: AttentionSettings, columns: list[str]) -> list[str]:
    """The settings' sources, or every role among the columns the task maps to a hop (the hops' reads)."""
    if settings.routing_sources is not None:
        unknown = [s for s in settings.routing_sources if s not in columns]
        if unknown:
            raise InputError(f"routing source {unknown[0]!r} is not a role of these programs ({', '.join(columns)})")
        return list(settings.routing_sources)
    hop_of = get_task(settings.task).hop_of
    return [c for c in columns if hop_of is not None and hop_of(c) is not None]


def routing_table(grids: dict[str, Grid], sources: list[str], k: int, hop_of) -> pd.DataFrame:
    """The top-k heads per destination and source (`hop_of`: the task's role -> hop map)."""
    frames = []
    for destination, grid in grids.items():
        for source in sources:
            table = routing_heads(grid, source, k).dropna(subset=["attention"])
            frames.append(table.assign(destination=destination, source=source, hop=hop_of(source) if hop_of else None,
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
    """Each routing head's edge destination -> source blocked in that head alone: the drop in LD
    (answer logit minus the best competing candidate's) and the answer's raw logit drop (means,
    95% t intervals over pairs), and the accuracy left among the candidates (Wilson)."""
    edges = [(int(r.layer), int(r.head), r.destination, r.source) for r in routing.itertuples()]
    implementation = getattr(plan.lm.model.config, "_attn_implementation", None)
    if implementation in ("eager", "sdpa"):
        values = head_edge_knockout(plan, edges, cells_per_forward=settings.batch_size)
    else:  # flash attention takes no mask: knock out under eager, as the weights were read
        with eager_attention(plan.lm.model):
            values = head_edge_knockout(plan, edges, cells_per_forward=settings.batch_size)
    columns: dict[str, Any] = {}
    for metric in ("ld_drop", "logit_drop"):
        mean, low, high, count = sample_interval(values[metric], axis=0)
        columns.update({f"knockout_{metric}": mean, f"knockout_{metric}_ci_low": low,
                        f"knockout_{metric}_ci_high": high})
    kept = ~np.isnan(values["accuracy"])
    successes, n = np.where(kept, values["accuracy"], 0).sum(axis=0), kept.sum(axis=0)
    low, high = wilson_bounds(successes, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        columns.update({"knockout_accuracy": np.where(n > 0, successes / n, np.nan), "knockout_accuracy_ci_low": low,
                        "knockout_accuracy_ci_high": high, "knockout_n": n.astype(int)})
    return routing.assign(**columns)


@dataclasses.dataclass
class _Measured:
    grids: dict[str, Grid]
    routing: pd.DataFrame
    programs: int
    looked_at: int
    loaded_with: str | None  # the attention implementation the model was loaded with


def _compute(run: AnalysisRun) -> _Measured:
    settings, lm = run.settings, run.lm
    loaded_with = getattr(lm.model.config, "_attn_implementation", None)
    pairs, looked_at, plan = run.pairs_and_plan(site="head")
    missing = [d for d in settings.destinations if d not in plan.labels]
    if missing:
        raise InputError(f"destination {missing[0]!r} is not a role of these programs ({', '.join(plan.labels)})")
    sequences, roles = sequences_and_roles(plan)
    grids = role_attention(lm, sequences, roles, settings.destinations, plan.labels, prefix=plan.prefix,
                           progress=settings.progress)
    routing = routing_table(grids, routing_sources(settings, plan.labels), settings.top_k,
                            get_task(settings.task).hop_of)
    if settings.confirm in ("head", "both") and not routing.empty:
        routing = confirm_by_head_patching(plan, routing, settings)
    if settings.confirm in ("knockout", "both") and not routing.empty:
        routing = confirm_by_knockout(plan, routing, settings)
    return _Measured(grids, routing, len(sequences), looked_at, loaded_with)


def _write(run: AnalysisRun, measured: _Measured) -> list[Path]:
    metadata = run.settings.model_dump(mode="json")
    files: list[Path] = []
    for destination, grid in measured.grids.items():
        files += run.write_grid(destination, grid, metadata)
        figure = head_panels(grid, ATTENTION_METRIC, f"{run.lm.name}: mean attention from {destination} "
                                                     f"({measured.programs} programs)")
        files.append(run.write_figure(f"attention_{destination}", figure,
                                      ATTENTION_HEATMAP_FILE.format(destination=destination)))
    cells = pd.concat([g.to_frame().assign(destination=d) for d, g in measured.grids.items()], ignore_index=True)
    files.append(run.write_table("attention", cells, ATTENTION_CELLS_FILE))
    files.append(run.write_table("routing_heads", measured.routing, ROUTING_FILE))
    return files


def _summarize(run: AnalysisRun, measured: _Measured) -> dict[str, Any]:
    loaded_with = measured.loaded_with
    return {"programs": measured.programs, "pairs_looked_at": measured.looked_at,
            "attn_implementation_loaded": loaded_with, "attention_read_with": "eager",
            "switched_to_eager": loaded_with != "eager", "routing": _routing_summary(measured.routing)}


ATTENTION = Analysis("attention", _compute, _write, _summarize,
                     outcome=lambda run, m, summary: AttentionOutcome(m.grids, m.routing, summary, run.tracker.out_dir))


def run_attention(settings: AttentionSettings, cache: ModelCache = MODEL_CACHE) -> AttentionOutcome:
    return run_analysis(ATTENTION, settings, cache)


def _routing_summary(routing: pd.DataFrame) -> dict[str, Any]:
    """destination -> source -> the top head ("layer.head"), its attention, head-patch effect,
    knockout LD drop and raw logit drop, and the accuracy left (those that were measured)."""
    out: dict[str, Any] = {}
    for row in routing[routing["rank"] == 1].to_dict("records"):
        entry = {"head": f"{row['layer']}.{row['head']}", "attention": row["attention"]}
        for key in ("head_patch_effect", "knockout_ld_drop", "knockout_ld_drop_ci_low", "knockout_ld_drop_ci_high",
                    "knockout_logit_drop", "knockout_accuracy", "knockout_n"):
            if key in row:
                entry[key] = None if pd.isna(row[key]) else row[key]
        out.setdefault(row["destination"], {})[row["source"]] = entry
    return out
