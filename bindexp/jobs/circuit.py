"""The circuit job (job_type `circuit`): every edge of the graph scored by EAP or EAP-IG, the top
edges checked by exact path patching, and the circuit they form with its faithfulness.

    outcome = run_circuit(CircuitSettings(model="smollm2-135m", hops=2, seq_len=6, ig_steps=8, top_n=30))
    outcome.edges             # every edge: score (95% CI, n), exact value where checked, in the circuit
    outcome.summary["faithfulness"], outcome.summary["complement_faithfulness"]

Scores: `bindexp.interventions.methods.edge_attribution` (normalized by each pair's gap: estimates of
each edge's path-patching normalized effect). Check: the `verify_top_k` edges of largest |score|
path-patched exactly (`exact_edges`), side by side; with verify=full also every edge into
`verify_receivers` (default every edge), so that precision@k, recall@k and the rank correlation
against the exact values are measured over that whole set. Circuit: the top_n edges by |score|, or
those reaching `threshold`; its faithfulness, its complement's, and each edge's minimality
(`bindexp.interventions.methods.circuit`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from bindexp.interventions.engine.graph import check_spec
from bindexp.interventions.engine.graph_forward import GraphParts
from bindexp.interventions.methods.atp import agreement, sign_agreement, spearman
from bindexp.interventions.methods.circuit import CircuitResult, choose_edges, circuit_faithfulness, edge_indices
from bindexp.interventions.methods.edge_attribution import edge_attribution
from bindexp.interventions.methods.path_patching import exact_edges
from bindexp.interventions.results.grid import Grid
from bindexp.io.folder import (
    CIRCUIT_FIGURE_FILE,
    CIRCUIT_FILE,
    EDGE_VERIFY_FILE,
    EDGES_FILE,
    FAITHFULNESS_FILE,
    MINIMALITY_FILE,
)
from bindexp.jobs.path_patch import check_request
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.plots.circuit import circuit_figure
from bindexp.runs.analysis import Analysis, AnalysisRun, run_analysis
from bindexp.runs.naming import model_label
from bindexp.runs.settings import OptionalStrList, PairSettings, positive_list

SCORE = "normalized_effect"
DEFAULT_K = 10  # agreement's k when no edge is checked by rank


class CircuitSettings(PairSettings):
    """`scripts/circuit.py`: EAP / EAP-IG over every edge, exact checks, a circuit and its faithfulness."""

    ig_steps: int = Field(0, ge=0, description="0: EAP (gradient at the clean run); K: EAP-IG over K interpolation "
                                               "points between the clean and counterfactual embeddings")
    top_n: int = Field(20, ge=1, description="the circuit: the top_n edges by |score| (unless threshold is set)")
    threshold: float | None = Field(None, gt=0, description="the circuit: every edge whose |mean score| reaches this")
    verify_top_k: int = Field(50, ge=0, description="edges of largest |score| checked by exact path patching")
    verify: Literal["top_k", "full"] = Field("top_k", description="full: exact path patching of every edge into "
                                             "verify_receivers too (precision@k, recall@k, Spearman over them)")
    verify_receivers: OptionalStrList = Field(None, description="verify=full: only edges into these receiver sets "
                                                               "(q:L.H, k:L.H, v:L.H, mlp:L, logits; None: every edge)")
    minimality: bool = Field(True, description="each circuit edge's share of the faithfulness (circuits of <= 50 edges)")
    pairs_per_chunk: int = Field(8, ge=1, description="pairs held in memory at once (exact checks)")
    table_edges: int = Field(2000, ge=1, description="edges in the W&B table (largest |score|; the CSV has every edge)")
    sizes: list[int] = Field([], description="also the faithfulness of the top n edges for each n here (a curve)")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: list[int]) -> list[int]:
        return positive_list(value, "sizes must be at least 1") if value else value

    @field_validator("verify_receivers")
    @classmethod
    def _specs(cls, value: list[str] | None) -> list[str] | None:
        for spec in value or []:
            check_spec(spec)
        return value

    @model_validator(mode="after")
    def _receivers_need_full(self) -> CircuitSettings:
        if self.verify_receivers is not None and self.verify != "full":
            raise ValueError("verify_receivers restricts verify=full; set --verify=full")
        return self


@dataclasses.dataclass
class CircuitOutcome:
    edges: pd.DataFrame  # every edge: score, exact value where checked, in_circuit
    verification: pd.DataFrame  # the edges checked exactly
    circuit: CircuitResult
    summary: dict[str, Any]
    out_dir: Path


@dataclasses.dataclass
class _Measured:
    scores: Grid
    exact: Grid | None
    checked: list[str]  # edges checked because of their rank (the top verify_top_k)
    full: list[str]  # edges checked because verify=full
    circuit: CircuitResult
    graph: Any
    exact_circuit: CircuitResult | None = None  # every edge checked: the circuit chosen by exact values
    by_size: dict[int, CircuitResult] = dataclasses.field(default_factory=dict)  # settings.sizes
    table: pd.DataFrame | None = None  # `edges_table`, once everything above is measured


def check_receivers(settings: CircuitSettings, lm) -> None:
    graph = GraphParts.of(lm).graph  # refuses families the graph forward does not cover
    for spec in settings.verify_receivers or []:
        graph.receiver_set(spec)


def full_set(graph, specs: list[str] | None) -> list[tuple[int, int]]:
    """verify=full: every edge into the receivers of `specs` (None: every edge)."""
    if specs is None:
        return list(graph.edges)
    receivers = {r for spec in specs for r in graph.receiver_set(spec).receivers}
    return [edge for edge in graph.edges if edge[1] in receivers]


def _compute(run: AnalysisRun) -> _Measured:
    settings = run.settings
    graph = GraphParts.of(run.lm).graph
    _, _, plan = run.pairs_and_plan(prefix_until="edit")
    scores = edge_attribution(plan, ig_steps=settings.ig_steps, min_gap=settings.min_gap, progress=settings.progress)
    checked = choose_edges(scores, top_n=settings.verify_top_k) if settings.verify_top_k else []
    full = [graph.edge_name(e) for e in full_set(graph, settings.verify_receivers)] if settings.verify == "full" else []
    to_check = list(dict.fromkeys(full + checked))
    exact = exact_edges(plan, edge_indices(graph, to_check), cells_per_forward=settings.batch_size,
                        pairs_per_chunk=settings.pairs_per_chunk, min_gap=settings.min_gap,
                        progress=settings.progress) if to_check else None
    chosen = choose_edges(scores, top_n=settings.top_n, threshold=settings.threshold)
    result = circuit_faithfulness(plan, chosen, minimality=settings.minimality, min_gap=settings.min_gap,
                                  progress=settings.progress)
    exact_circuit = None
    if settings.verify == "full" and settings.verify_receivers is None and exact is not None:
        exact_circuit = circuit_faithfulness(plan, choose_edges(exact, top_n=settings.top_n, threshold=settings.threshold),
                                             minimality=False, min_gap=settings.min_gap)
    by_size = {n: circuit_faithfulness(plan, choose_edges(scores, top_n=n), minimality=False, min_gap=settings.min_gap)
               for n in sorted(set(settings.sizes))}
    measured = _Measured(scores, exact, checked, full, result, graph, exact_circuit, by_size)
    measured.table = edges_table(measured)
    return measured


def edges_table(measured: _Measured) -> pd.DataFrame:
    """Every edge: sender, receiver, the score with its interval and n, its rank by |score|, the
    exact normalized effect where checked, and whether it is in the circuit."""
    scores, graph = measured.scores, measured.graph
    names = scores.labels["edge"]
    mean = scores.mean[SCORE]
    rank = np.empty(len(names), dtype=int)
    rank[np.argsort(-np.abs(np.nan_to_num(mean, nan=0.0)), kind="stable")] = np.arange(1, len(names) + 1)
    frame = pd.DataFrame({"edge": names, "sender": [n.split("->")[0] for n in names],
                          "receiver": [n.split("->")[1] for n in names], "rank": rank, "score": mean,
                          "score_ci_low": scores.ci_low[SCORE], "score_ci_high": scores.ci_high[SCORE],
                          "score_ld_shift": scores.mean["ld_shift"], "n": scores.n})
    frame["receiver_kind"] = [graph.receivers[graph.receiver_index[r]].kind for r in frame["receiver"]]
    frame["receiver_layer"] = [graph.receivers[graph.receiver_index[r]].layer for r in frame["receiver"]]
    frame["exact"] = np.nan
    frame["exact_ci_low"] = np.nan
    frame["exact_ci_high"] = np.nan
    if measured.exact is not None:
        position = {name: i for i, name in enumerate(names)}
        where = [position[e] for e in measured.exact.labels["edge"]]
        frame.loc[where, "exact"] = measured.exact.mean[SCORE]
        frame.loc[where, "exact_ci_low"] = measured.exact.ci_low[SCORE]
        frame.loc[where, "exact_ci_high"] = measured.exact.ci_high[SCORE]
    frame["in_circuit"] = frame["edge"].isin(measured.circuit.edges)
    return frame


def verification_numbers(table: pd.DataFrame, measured: _Measured, k: int) -> dict[str, Any]:
    """top_k: sign agreement and rank correlation over the checked edges; full: precision@k,
    recall@k, sign agreement on the exact top k and Spearman over every edge of the full set."""
    numbers: dict[str, Any] = {"edges_checked": int(table["exact"].notna().sum())}
    checked = table[table["edge"].isin(measured.checked)]
    if len(checked):
        numbers["sign_agreement_top_k"] = sign_agreement(checked["score"].to_numpy(), checked["exact"].to_numpy())
        numbers["spearman_top_k"] = spearman(checked["score"].to_numpy(), checked["exact"].to_numpy())
    if measured.full:
        full = table[table["edge"].isin(measured.full)]
        numbers.update({key: value for key, value in
                        agreement(full["score"].to_numpy(), full["exact"].to_numpy(), k).items() if key != "k"})
        numbers["full_edges"] = len(full)
    return {key: None if isinstance(value, float) and np.isnan(value) else value for key, value in numbers.items()}


def circuit_json(run: AnalysisRun, measured: _Measured, table: pd.DataFrame) -> dict[str, Any]:
    """The graph as JSON: its shape, the circuit's nodes and edges (score, exact where checked),
    faithfulness and minimality."""
    graph, result = measured.graph, measured.circuit
    rows = table[table["in_circuit"]].sort_values("rank")
    edges = [{key: (None if isinstance(value, float) and np.isnan(value) else value) for key, value in row.items()}
             for row in rows[["sender", "receiver", "rank", "score", "score_ci_low", "score_ci_high", "n",
                              "exact", "exact_ci_low", "exact_ci_high"]].to_dict("records")]
    nodes = sorted({e["sender"] for e in edges} | {e["receiver"] for e in edges})
    return {"model": run.lm.name, "method": measured.scores.info["method"], "ig_steps": run.settings.ig_steps,
            "graph": {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "n_kv_heads": graph.n_kv_heads,
                      "nodes": len(graph.nodes), "receivers": len(graph.receivers), "edges": len(graph.edges)},
            "score": "mean over pairs of (EAP score / (LD_cf - LD_clean)): the estimated normalized effect of "
                     "path patching the edge alone",
            "nodes": nodes, "edges": edges, "faithfulness": result.interval("faithfulness"),
            "complement_faithfulness": result.interval("complement"), "minimality": result.minimality()}


def _write(run: AnalysisRun, measured: _Measured) -> list[Path]:
    settings, metadata, table = run.settings, run.settings.model_dump(mode="json"), measured.table
    files = run.write_grid("scores", measured.scores, metadata)
    if measured.exact is not None:
        files += run.write_grid("exact", measured.exact, metadata)
    logged = table[(table["rank"] <= settings.table_edges) | table["exact"].notna() | table["in_circuit"]]
    files.append(run.write_table("edges", table, EDGES_FILE, logged=logged))
    verified = table[table["exact"].notna()].sort_values("rank")
    files.append(run.write_table("edge_verify", verified, EDGE_VERIFY_FILE))
    result = measured.circuit
    rows = [{"edges": "circuit", "size": len(result.edges), **result.interval("faithfulness")},
            {"edges": "complement", "size": len(result.edges), **result.interval("complement")}]
    for size, other in measured.by_size.items():
        rows += [{"edges": f"top {size}", "size": size, **other.interval("faithfulness")},
                 {"edges": f"top {size} complement", "size": size, **other.interval("complement")}]
    faithfulness = pd.DataFrame(rows)
    files.append(run.write_table("faithfulness", faithfulness, FAITHFULNESS_FILE))
    if result.minimality():
        files.append(run.write_table("minimality", pd.DataFrame(result.minimality()), MINIMALITY_FILE))
    files.append(run.tracker.write_json(CIRCUIT_FILE, circuit_json(run, measured, table)))
    graph = measured.graph
    drawn = [(row.sender, row.receiver, float(row.score)) for row in table[table["in_circuit"]].itertuples()]
    faith = result.interval("faithfulness")
    title = (f"{model_label(run.lm.name)}: {len(drawn)} edges by {measured.scores.info['method']}, faithfulness "
             f"{faith['mean']:.2f} [{faith['ci_low']:.2f}, {faith['ci_high']:.2f}] (n={faith['n']})")
    files.append(run.write_figure("circuit", circuit_figure(drawn, graph.n_layers, graph.n_heads, graph.group, title),
                                  CIRCUIT_FIGURE_FILE))
    return files


def _summarize(run: AnalysisRun, measured: _Measured) -> dict[str, Any]:
    settings, scores, result, table = run.settings, measured.scores, measured.circuit, measured.table
    k = settings.verify_top_k or DEFAULT_K
    top = table.sort_values("rank").head(10)
    return {"method": scores.info["method"], "ig_steps": settings.ig_steps,
            "pairs": int(scores.info["pairs"]) - int(scores.info["excluded_small_gap"]),
            "pairs_excluded_min_gap": int(scores.info["excluded_small_gap"]), "edges_total": len(table),
            "circuit_edges": len(result.edges), "faithfulness": result.interval("faithfulness"),
            "complement_faithfulness": result.interval("complement"),
            "verify": {"k": k, **verification_numbers(table, measured, k)},
            **({"exact_circuit": exact_circuit_summary(measured)} if measured.exact_circuit is not None else {}),
            **({"faithfulness_by_size": {str(n): {"faithfulness": r.interval("faithfulness"),
                                                  "complement_faithfulness": r.interval("complement")}
                                         for n, r in measured.by_size.items()}} if measured.by_size else {}),
            "top_edges": [{"edge": row.edge, "score": float(row.score),
                           "exact": None if pd.isna(row.exact) else float(row.exact)} for row in top.itertuples()]}


def exact_circuit_summary(measured: _Measured) -> dict[str, Any]:
    """The circuit the exact values choose (same size rule), for comparison: its faithfulness, its
    complement's, and how many of its edges the estimate's circuit shares."""
    exact = measured.exact_circuit
    return {"faithfulness": exact.interval("faithfulness"), "complement_faithfulness": exact.interval("complement"),
            "edges": len(exact.edges), "shared_with_circuit": len(set(exact.edges) & set(measured.circuit.edges))}


CIRCUIT = Analysis("circuit", _compute, _write, _summarize,
                   outcome=lambda run, m, summary: CircuitOutcome(m.table, m.table.dropna(subset=["exact"]), m.circuit,
                                                                  summary, run.tracker.out_dir),
                   check=check_request, check_model=check_receivers, name_defaults={})


def run_circuit(settings: CircuitSettings, cache: ModelCache = MODEL_CACHE) -> CircuitOutcome:
    return run_analysis(CIRCUIT, settings, cache)
