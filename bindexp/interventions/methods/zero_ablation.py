"""Zero ablation: write zeros at the site, cell by cell, instead of the counterfactual's values.

The pair's counterfactual only sets the answer tokens the metrics compare; every column is run,
before the edit too, so the plan's shared prefix stops before the first column.
"""

from __future__ import annotations

from bindexp.interventions.engine.plan import GridPlan
from bindexp.interventions.methods import MethodOptions, MethodResult
from bindexp.interventions.methods.exact import patch_cells


def zero_ablation(plan: GridPlan, options: MethodOptions) -> MethodResult:
    return MethodResult(patch_cells(plan, source=lambda pair: pair.clean_site.new_zeros(()).expand(pair.clean_site.shape),
                                    unchanged_before_edit=False, cells_per_forward=options.cells_per_forward,
                                    pairs_per_chunk=options.pairs_per_chunk, on_pair=options.on_pair,
                                    progress=options.progress))
