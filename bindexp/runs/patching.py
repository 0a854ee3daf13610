"""The patch grid a run's settings ask for: the method on a plan of the pairs, controls scored by
their flip rate, pairs below min_gap left out, exact grids with their own noise floor. Used by the
patch run and by locate (one exact grid per causal variable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bindexp.errors import ModelError
from bindexp.interventions.engine.plan import plan_grid
from bindexp.interventions.methods import METHODS, MethodOptions, MethodResult
from bindexp.interventions.methods.exact import attach_metric
from bindexp.interventions.methods.noise import noise_floor
from bindexp.interventions.results.grid import Grid
from bindexp.models.loading import LoadedModel
from bindexp.tasks.registry import get_task
from bindexp.vocab import NOISE_FLOOR

CONTROL_METRIC = "flip"  # pairs that share their answer: the share of predictions leaving it (the flip rate)



MIN_GAP_METHODS = ("exact", "atp")  # the methods whose headline is normalized by the gap


def effective_min_gap(settings: Any) -> float:
    """min_gap for methods normalized by the gap; 0 for controls (their two answers are one token:
    the gap is 0 by design) and for the other methods."""
    if settings.method not in MIN_GAP_METHODS or is_control(settings):
        return 0.0
    return settings.min_gap


def compute_grid(lm: LoadedModel, settings: Any, pairs, shots,
                 on_pair: Callable[[dict[str, Any]], None] | None = None) -> MethodResult:
    """The settings' method (`PatchMethodGroup` + `PairsGroup`) on a plan of these pairs; exact grids
    get their `noise_floor` metric; `on_pair` receives each pair's own values."""
    method = METHODS[settings.method]
    plan = plan_grid(lm, pairs, site=settings.site, shots=shots, template=settings.template,
                     columns="roles" if settings.positions == "roles" else "positions", layers=settings.layers,
                     prefix_until=method.prefix_until)
    min_gap = effective_min_gap(settings)
    options = MethodOptions(cells_per_forward=settings.batch_size, pairs_per_chunk=settings.pairs_per_chunk,
                            on_pair=on_pair, progress=settings.progress,
                            verify_top_k=settings.verify_top_k, verify_full=settings.verify == "full",
                            min_gap=min_gap, knockout_destination=settings.knockout_destination,
                            knockout_window=settings.knockout_window)
    result = method.load()(plan, options)
    if is_control(settings):  # both answers are one token: IIA would be accuracy on the original answer
        for table in (result.grid.mean, result.grid.ci_low, result.grid.ci_high, result.grid.counts):
            table.pop("iia", None)
    excluded = set(result.grid.info.get("excluded_pairs", []))
    labels = [t.pair.original.meta["heuristic"] for i, t in enumerate(plan.tokenized)
              if i not in excluded and "heuristic" in t.pair.original.meta]
    if labels:  # tasks with the line-1/line-2 heuristic: its share of the pairs actually patched
        result.grid.info["heuristic_share"] = sum(map(bool, labels)) / len(labels)
    if result.grid.info.get("excluded_small_gap") and not result.grid.n.any():
        raise ModelError(f"every pair's clean-to-counterfactual logit gap is below min_gap={min_gap}; "
                         "lower --min_gap (0 keeps every pair)")
    if settings.method == "exact" and settings.noise_floor_pairs:
        floor, cost = noise_floor(plan, settings.noise_floor_pairs, cells_per_forward=settings.batch_size,
                                  min_gap=min_gap, metric=headline_metric(settings, result.grid))
        attach_metric(result.grid, NOISE_FLOOR, floor)
        result.grid.info["noise_floor"] = {**cost, "definition": NOISE_FLOOR_DEFINITION}
    return result


NOISE_FLOOR_DEFINITION = ("per cell, max |headline metric| over the first noise_floor_pairs pairs of the same cells "
                          "patched with the clean run's own values (same code path and dtype)")


def headline_metric(settings: Any, grid: Grid) -> str:
    """The method's headline metric, or the control metric for pairs whose answer must not change."""
    if is_control(settings) and CONTROL_METRIC in grid.metrics:
        return CONTROL_METRIC
    return METHODS[settings.method].headline


def is_control(settings: Any) -> bool:
    """A counterfactual whose answer must not change."""
    return not get_task(settings.task).counterfactual(settings.counterfactual).changes_answer
