"""Grid methods by name. Torch-free: settings read the names without importing a model stack.

A method is a function `(plan, options) -> MethodResult` in its own module of this package, named
here by an import string and loaded when it runs. Adding one is its file plus one line in METHODS.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from bindexp.interventions.results.grid import Grid


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """What a run asks of its method beyond the plan; each method reads the fields it needs."""

    cells_per_forward: int = 32
    pairs_per_chunk: int = 8
    on_pair: Callable[[dict[str, Any]], None] | None = None  # receives each pair's own values (methods that keep them)
    progress: bool = False
    verify_top_k: int = 0  # atp: re-check its k largest cells exactly
    verify_full: bool = False  # atp: compute the exact grid of every cell too (full-grid agreement)
    min_gap: float = 0.0  # exact, atp: leave out pairs whose |LD_cf - LD_clean| is below this
    knockout_destination: str = "final"
    knockout_window: int = 1
    knockout_sources: Sequence[str] | None = None  # None: every column but the final token


@dataclasses.dataclass
class Verification:
    """An estimate's largest cells re-checked exactly: the side-by-side table and the agreement
    numbers (`bindexp.interventions.methods.atp.agreement`); `exact`: the full exact grid when computed."""

    table: Any  # pandas DataFrame: the cell's labels, `atp`, `exact`
    agreement: dict[str, Any]
    exact: Grid | None = None


@dataclasses.dataclass
class MethodResult:
    grid: Grid
    verification: Verification | None = None


@dataclasses.dataclass(frozen=True)
class Method:
    """target: "module:function" of the method. headline: the metric a run's summary and heatmap
    lead with. prefix_until: how far the plan's shared prefix may reach (see `plan_grid`)."""

    target: str
    headline: str
    prefix_until: str = "edit"

    def load(self) -> Callable[..., MethodResult]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


METHODS: dict[str, Method] = {
    "exact": Method("bindexp.interventions.methods.exact:exact_method", "normalized_effect"),
    "atp": Method("bindexp.interventions.methods.atp:atp_method", "normalized_effect"),
    "knockout": Method("bindexp.interventions.methods.knockout:knockout_method", "p_drop"),
    "zero_ablation": Method("bindexp.interventions.methods.zero_ablation:zero_ablation", "p_original_change", "columns"),
}
METHOD_NAMES = tuple(METHODS)
