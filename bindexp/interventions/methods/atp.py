"""Attribution patching (AtP): a first-order estimate of every cell from three passes per pair.

    LD_patched(cell) ~= LD_clean + (a_cf - a_clean)[cell] . dLD/da[cell]   (gradient at the clean run)

One clean forward + backward and one counterfactual forward give the whole grid. The estimate is
exact where LD is linear in the patched activation; elsewhere check it by exact patching: its
top k cells (`verify_top_k`: their exact values and sign agreement), or every cell (`verify_full`:
precision and recall of AtP's top k against the exact top k, sign agreement, full-grid Spearman;
see `agreement`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from bindexp.interventions.engine.plan import GridPlan, TokenizedPair, plan_grid
from bindexp.interventions.methods import MethodOptions, MethodResult, Verification
from bindexp.interventions.methods.exact import patch_cells
from bindexp.interventions.results.grid import Grid
from bindexp.interventions.results.metrics import logit_diff, normalized_effect
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel
from bindexp.models.sites import SiteMap
from bindexp.models.tracing import after_prefix, site_activation
from bindexp.tasks.counterfactuals import CounterfactualPair

ATP_METRICS = ("normalized_effect", "logit_diff")


def _site_pass(lm: LoadedModel, sites: SiteMap, site: str, ids: list[int], prefix: SharedPrefix | None,
               with_grad: bool, answer) -> tuple[torch.Tensor, float, torch.Tensor | None]:
    """Site activations [layers, T - start, width] and LD of one prompt; with its gradient."""
    tensor, positions, cache = after_prefix([ids], prefix, lm.device)
    acts = []
    with torch.set_grad_enabled(with_grad):
        with lm.traced.trace(tensor, position_ids=positions, past_key_values=cache,
                             use_cache=prefix is not None, logits_to_keep=1):
            for layer in range(sites.n_layers):
                acts.append(site_activation(sites, lm.traced, site, layer).save())
            logits = lm.traced.output.logits.save()
        ld = logit_diff(logits[0, -1].float(), answer)
        grads = torch.autograd.grad(ld, acts) if with_grad else None
    stacked = torch.stack([a[0].detach() for a in acts])
    grad = torch.stack([g[0] for g in grads]) if grads is not None else None
    return stacked, float(ld.detach()), grad


def attribution_grid(lm: LoadedModel, pairs: Sequence[CounterfactualPair], *, progress: bool = False,
                     **plan_args: Any) -> Grid:
    """AtP estimates of LD and normalized effect for every (layer, column[, head]) cell.

    plan_args: `plan_grid`'s keywords (site, shots, template, columns, layers).
    """
    return estimate_cells(plan_grid(lm, pairs, **plan_args), progress=progress)


DEFAULT_VERIFY_K = 10  # verify_full without verify_top_k


def atp_method(plan: GridPlan, options: MethodOptions) -> MethodResult:
    """AtP estimates; with verify_top_k, its largest cells re-checked by exact patching; with
    verify_full, the exact grid of every cell too."""
    grid = estimate_cells(plan, progress=options.progress, min_gap=options.min_gap)
    if not options.verify_top_k and not options.verify_full:
        return MethodResult(grid)
    k = options.verify_top_k or DEFAULT_VERIFY_K
    cells = top_cells(grid, k)
    driver = dict(cells_per_forward=options.cells_per_forward, progress=options.progress, min_gap=options.min_gap)
    if options.verify_full:
        exact = patch_cells(plan, **driver)
        numbers = agreement(grid.mean["normalized_effect"], exact.mean["normalized_effect"], k)
    else:
        exact = patch_cells(dataclasses.replace(plan, layers=sorted({c[0] for c in cells})), only=set(cells), **driver)
        numbers = {"k": k}
    table = compare_cells(grid, exact, cells)
    numbers["sign_agreement_top_k"] = sign_agreement(table["atp"].to_numpy(), table["exact"].to_numpy())
    return MethodResult(grid, Verification(table, numbers, exact if options.verify_full else None))


def estimate_cells(plan: GridPlan, progress: bool = False, min_gap: float = 0.0) -> Grid:
    """The plan's cells estimated from one clean forward + backward and one counterfactual forward
    per pair; pairs whose |LD_cf - LD_clean| is below `min_gap` are left out."""
    from tqdm.auto import tqdm

    lm, site = plan.lm, plan.site
    sites = lm.sites
    accumulator = plan.accumulator(ATP_METRICS)
    tokenized, labels, column_map, heads, start, prefix = (plan.tokenized, plan.labels, plan.column_map, plan.heads,
                                                          plan.start, plan.prefix)
    excluded = []
    for index, item in enumerate(tqdm(tokenized, disable=not progress, desc=f"AtP {site}", unit="pair")):
        clean, ld_clean, grad = _site_pass(lm, sites, site, item.ids, prefix, True, item.answer)
        cf, ld_cf, _ = _site_pass(lm, sites, site, item.cf_ids, prefix, False, item.answer)
        if abs(ld_cf - ld_clean) < min_gap:
            excluded.append(index)
            continue
        accumulator.add(_estimates(item, sites, heads, labels, column_map, start, clean[plan.layers], cf[plan.layers],
                                   grad[plan.layers], ld_clean, ld_cf, accumulator.pairs.shape))
    return accumulator.grid(info={"site": site, "method": "atp", "pairs": len(tokenized), "dropped": plan.dropped,
                                  "excluded_small_gap": len(excluded), "excluded_pairs": excluded, "min_gap": min_gap,
                                  **plan.head_info()})


def _estimates(item: TokenizedPair, sites: SiteMap, heads, labels, column_map, start, clean, cf, grad,
               ld_clean, ld_cf, shape) -> dict[str, np.ndarray]:
    delta = ((cf - clean) * grad).float()  # [layers, T - start, width]
    if heads:
        per_position = delta.reshape(*delta.shape[:2], len(heads), sites.head_dim).sum(-1)  # [L, T', H]
    else:
        per_position = delta.sum(-1)  # [L, T']
    per_position = per_position.cpu().numpy()
    ld = np.full(shape, np.nan)
    for col, position in column_map(item).items():
        # before the edit both runs are identical (this also covers the shared prefix): no effect
        ld[:, labels.index(col)] = ld_clean if position < item.first_diff else ld_clean + per_position[:, position - start]
    effect = normalized_effect(torch.from_numpy(ld), ld_clean, ld_cf).numpy()
    return {"normalized_effect": effect, "logit_diff": ld}


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation over the entries both arrays have (Pearson on ranks, ties averaged)."""
    both = ~np.isnan(x) & ~np.isnan(y)
    if both.sum() < 3:
        return float("nan")
    return float(pd.Series(x[both]).rank().corr(pd.Series(y[both]).rank()))


def top_k_set(values: np.ndarray, k: int) -> set[int]:
    """Flat indices of the k largest |values| (NaN never), with every cell tied with the k-th."""
    magnitude = np.abs(values.ravel())
    finite = np.flatnonzero(np.isfinite(magnitude))
    if not finite.size or k <= 0:
        return set()
    kth = np.sort(magnitude[finite])[::-1][min(k, finite.size) - 1]
    return {int(i) for i in finite if magnitude[i] >= kth}


def sign_agreement(estimate: np.ndarray, exact: np.ndarray) -> float:
    """Share of cells (both finite) where the two values have the same sign (0 counts as its own sign)."""
    both = np.isfinite(estimate) & np.isfinite(exact)
    return float((np.sign(estimate[both]) == np.sign(exact[both])).mean()) if both.any() else float("nan")


def agreement(estimate: np.ndarray, exact: np.ndarray, k: int) -> dict[str, float]:
    """How well an estimated grid finds an exact grid's cells (arrays of the same cells, |value| ranks).

    precision_at_k: share of the estimate's top k that are in the exact top k; recall_at_k: share of
    the exact top k that are in the estimate's top k (top k sets include every cell tied with the
    k-th, so the two differ only through ties); sign_agreement_exact_top_k: share of the exact top k
    whose signs agree; spearman_full: rank correlation of the values over every cell both have.
    """
    if estimate.shape != exact.shape:
        raise ValueError(f"grids of different cells: {estimate.shape} vs {exact.shape}")
    mine, truth = top_k_set(estimate, k), top_k_set(exact, k)
    hits = len(mine & truth)
    chosen = sorted(truth)
    return {
        "k": k,
        "precision_at_k": hits / len(mine) if mine else float("nan"),
        "recall_at_k": hits / len(truth) if truth else float("nan"),
        "sign_agreement_exact_top_k": sign_agreement(estimate.ravel()[chosen], exact.ravel()[chosen]),
        "spearman_full": spearman(estimate.ravel(), exact.ravel()),
    }


def top_cells(grid: Grid, k: int, metric: str = "normalized_effect") -> list[tuple]:
    """The k cells (as label tuples) with the largest |metric|."""
    values = np.nan_to_num(np.abs(grid.mean[metric]), nan=-1.0).ravel()
    order = np.argsort(-values, kind="stable")[:k]
    return [tuple(grid.labels[a][i] for a, i in zip(grid.axes, np.unravel_index(j, grid.shape))) for j in order]


def compare_cells(atp: Grid, exact: Grid, cells: Sequence[tuple], metric: str = "normalized_effect") -> pd.DataFrame:
    """AtP and exact values side by side for `cells` (label tuples)."""

    def value(grid: Grid, cell: tuple) -> float:
        return float(grid.mean[metric][tuple(grid.labels[a].index(v) for a, v in zip(grid.axes, cell))])

    return pd.DataFrame([{**dict(zip(atp.axes, cell)), "atp": value(atp, cell), "exact": value(exact, cell)}
                         for cell in cells])
