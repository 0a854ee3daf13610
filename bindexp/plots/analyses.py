"""The analysis runs' figures (attention, lens, locate, subspace)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bindexp.plots.figure import new_figure


def head_panels(grid: Any, metric: str, title: str, roles: Sequence[str] | None = None):
    """One panel per role: layer x head heatmap of a ("layer", "role", "head") grid (no pyplot)."""
    roles = list(roles or grid.labels["role"])
    values = grid.mean[metric]
    columns = min(4, len(roles))
    rows = -(-len(roles) // columns)
    figure = new_figure(3.2 * columns + 1.0, 2.6 * rows + 0.6, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    for ax in axes.flat[len(roles):]:
        ax.set_visible(False)
    for ax, role in zip(axes.flat, roles):
        image = ax.imshow(values[:, grid.labels["role"].index(role), :], aspect="auto", origin="lower",
                          cmap="viridis", vmin=0.0, vmax=top)
        ax.set(title=role, xlabel="head", ylabel="layer")
    figure.colorbar(image, ax=axes.ravel().tolist(), label=metric)
    figure.suptitle(title, fontsize=9)
    return figure


def lens_curve(grid: Any, readable: dict[str, Any], title: str, role: str = "final"):
    """The role's answer / counterfactual probability and top-1 share against layer (no pyplot)."""
    figure = new_figure(6.0, 3.6)
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


def iia_panels(grids: dict[str, Any], title: str):
    figure = new_figure(5.0 * len(grids), 4.4)
    axes = figure.subplots(1, len(grids), squeeze=False)[0]
    for ax, (variable, grid) in zip(axes, grids.items()):
        grid.plot("iia", ax=ax, title=f"{variable}: IIA")
    figure.suptitle(title, fontsize=9)
    return figure


def loss_figure(result: Any, title: str):
    figure = new_figure(5.5, 3.4)
    ax = figure.subplots()
    for i, k in enumerate(result.ks):
        ax.plot(result.losses[i], label=f"k={k}")
    ax.set(xlabel="step", ylabel="training loss (candidate cross-entropy)", title=title)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure
