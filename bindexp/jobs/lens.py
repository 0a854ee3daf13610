"""The logit-lens job (job_type `lens`): from which layer is the answer readable, and where?

    outcome = run_lens(LensSettings(model="smollm2-135m", hops=2, seq_len=6))
    outcome.grid.to_frame(); outcome.readable

Programs: the originals of the patch runner's pairs (the counterfactual answer is the pair's).
Per layer x role: the answer's and the counterfactual answer's rank and probability (full
vocabulary) through the final norm and unembedding, with 95% intervals over programs. Layer
index l < n_layers is the residual entering layer l; index n_layers is the last layer's output
(the model's own logits).

Readable layer (final token), by the interval rule (`bindexp.stats.decide`) on the share of
programs whose top-1 token is the answer: the first layer L such that at L *and every later layer*
that share carries (its 95% Wilson lower bound reaches `readable_threshold`). `readable_layer_low`
is the earliest layer the data allow (from it on, no layer's upper bound lies below the threshold);
the layers between are `undetermined_layers`; `readable_layer_point` is the same rule on the point
estimates (share > threshold), for reference. None when no layer qualifies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from bindexp.interventions.readouts.lens import role_lens
from bindexp.interventions.results.grid import Grid, proportion_interval
from bindexp.io.folder import HEATMAP_FILE, LENS_CELLS_FILE, LENS_CURVE_FILE
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.plots.analyses import lens_curve
from bindexp.runs.analysis import Analysis, AnalysisRun, run_analysis, sequences_and_roles
from bindexp.runs.settings import PairSettings
from bindexp.stats import CARRIES, DECISION_RULE, DOES_NOT, UNDETERMINED, decisions


class LensSettings(PairSettings):
    """`scripts/lens.py`: the logit lens per layer x role for the answer and the counterfactual answer."""

    readable_threshold: float = Field(0.5, gt=0, lt=1, description="the answer is readable at a layer when the "
                                                                   "Wilson lower bound of the share of programs "
                                                                   "where it is top-1 reaches this")


@dataclasses.dataclass
class LensOutcome:
    grid: Grid  # axes ("layer", "role"); layer n_layers = after the last layer
    readable: dict[str, Any]  # readable_layer (+ low, point, undetermined), the final token's top-1 share per layer
    summary: dict[str, Any]
    out_dir: Path


def first_layer_above(shares: Sequence[float], layers: Sequence[int], threshold: float) -> int | None:
    """The first layer from which every share (this layer's and all later ones) exceeds threshold."""
    above = np.asarray(shares, dtype=float) > threshold
    return first_layer_where(above, layers)


def first_layer_where(holds: Sequence[bool], layers: Sequence[int]) -> int | None:
    """The first layer from which `holds` is true at that layer and every later one."""
    holds = np.asarray(holds, dtype=bool)
    for i in range(len(layers)):
        if holds[i:].all():
            return layers[i]
    return None


def readable_layer(grid: Grid, threshold: float, role: str = "final") -> dict[str, Any]:
    """The readable layer of `role` by the interval rule, and its range (see the module docstring)."""
    column = grid.labels["role"].index(role)
    _, low, high = proportion_interval(grid, "top1_answer")
    shares = grid.mean["top1_answer"][:, column]
    layers = grid.labels["layer"]
    decided = decisions(low[:, column], high[:, column], threshold)
    return {"readable_layer": first_layer_where(decided == CARRIES, layers),
            "readable_layer_low": first_layer_where(decided != DOES_NOT, layers),
            "readable_layer_point": first_layer_above(shares, layers, threshold),
            "undetermined_layers": [layer for layer, d in zip(layers, decided) if d == UNDETERMINED],
            "readable_threshold": threshold, "decision_rule": DECISION_RULE,
            "top1_share_by_layer": [None if np.isnan(v) else float(v) for v in shares],
            "top1_ci_low_by_layer": [None if np.isnan(v) else float(v) for v in low[:, column]],
            "top1_ci_high_by_layer": [None if np.isnan(v) else float(v) for v in high[:, column]]}


@dataclasses.dataclass
class _Measured:
    grid: Grid
    readable: dict[str, Any]
    programs: int
    looked_at: int


def _compute(run: AnalysisRun) -> _Measured:
    pairs, looked_at, plan = run.pairs_and_plan()
    sequences, roles = sequences_and_roles(plan)
    answers = [(t.answer.original, t.answer.counterfactual) for t in plan.tokenized]
    grid = role_lens(run.lm, sequences, roles, answers, plan.labels, prefix=plan.prefix, progress=run.settings.progress)
    return _Measured(grid, readable_layer(grid, run.settings.readable_threshold), len(sequences), looked_at)


def _write(run: AnalysisRun, measured: _Measured) -> list[Path]:
    grid, name = measured.grid, run.lm.name
    files = run.write_grid("lens", grid, run.settings.model_dump(mode="json"))
    files.append(run.write_table("lens", grid.to_frame(), LENS_CELLS_FILE))
    title = f"{name}: logit lens at the final token ({measured.programs} programs)"
    files.append(run.write_figure("lens_final", lens_curve(grid, measured.readable, title), LENS_CURVE_FILE))
    files.append(run.write_figure("heatmap", grid.plot("p_answer", title=f"{name}: p(answer) by lens"), HEATMAP_FILE))
    return files


def _summarize(run: AnalysisRun, measured: _Measured) -> dict[str, Any]:
    grid, readable = measured.grid, measured.readable
    last = len(grid.labels["layer"]) - 1
    final = grid.labels["role"].index("final")
    summary = {"programs": measured.programs, "pairs_looked_at": measured.looked_at,
               **{k: v for k, v in readable.items() if not k.endswith("_by_layer")},
               "final_top1_share": readable["top1_share_by_layer"][last],
               **{f"final_{metric}{end}": float(table[metric][last, final]) for metric in ("p_answer", "rank_answer")
                  for end, table in (("", grid.mean), ("_ci_low", grid.ci_low), ("_ci_high", grid.ci_high))},
               "intervals_clipped": grid.info.get("clipped", {}),
               "layer_axis": f"l < {last}: residual entering layer l; {last}: the last layer's output"}
    run.tracker.log_table("lens_final", _curve_frame(readable, grid.labels["layer"]))
    return summary


LENS = Analysis("lens", _compute, _write, _summarize,
                outcome=lambda run, m, summary: LensOutcome(m.grid, m.readable, summary, run.tracker.out_dir))


def run_lens(settings: LensSettings, cache: ModelCache = MODEL_CACHE) -> LensOutcome:
    return run_analysis(LENS, settings, cache)


def _curve_frame(readable: dict[str, Any], layers: Sequence[int]) -> pd.DataFrame:
    return pd.DataFrame({"layer": list(layers), "top1_share": readable["top1_share_by_layer"],
                         "ci_low": readable["top1_ci_low_by_layer"], "ci_high": readable["top1_ci_high_by_layer"]})
