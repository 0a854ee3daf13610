"""The analysis runs' figures (attention, lens, locate, subspace, hypotheses)."""

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


def loss_figure(result: Any, title: str, boundless: Any = None):
    """DAS's training loss per k (and boundless DAS's, with the size its boundary stands for)."""
    figure = new_figure(5.5, 3.4)
    ax = figure.subplots()
    for i, k in enumerate(result.ks):
        ax.plot(result.losses[i], label=f"k={k}")
    if boundless is not None:
        ax.plot(boundless.losses, color="black", label=f"boundless (settles on {boundless.size})")
    ax.set(xlabel="step", ylabel="training loss (candidate cross-entropy)", title=title)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


LINES = {"das": ("DAS", "tab:blue", "o"), "diff_pca": ("difference-PCA (no learning)", "tab:orange", "s")}
POINTS = {"boundless_das": ("purple", "*"), "pca_probe": ("tab:green", "D")}  # one subspace each: a point at its k


def subspace_figure(frame: Any, title: str):
    """Held-out IIA against k (Wilson intervals) for DAS and difference-PCA, the random subspaces'
    mean with their min-max band, the probe's and boundless DAS's subspaces as points at their k,
    the whole residual as a line; beside it, each subspace's share of E|x_cf - x|^2 (no pyplot)."""
    figure = new_figure(11.0, 4.0)
    iia_ax, share_ax = figure.subplots(1, 2)
    for method, group in frame.groupby("method", sort=False):
        group = group.sort_values("k")
        if method == "whole_residual":
            row = group.iloc[0]
            for ax, value in ((iia_ax, row["iia"]), (share_ax, 1.0)):
                ax.axhline(value, color="grey", linestyle="--", linewidth=1, label=f"whole residual (k={row['k']})")
            iia_ax.axhspan(row["iia_ci_low"], row["iia_ci_high"], color="grey", alpha=0.12)
            continue
        if method == "random":
            stats = group.groupby("k")["iia"].agg(["mean", "min", "max"])
            iia_ax.plot(stats.index, stats["mean"], color="tab:red", marker=".", label="random subspaces (mean)")
            iia_ax.fill_between(stats.index, stats["min"], stats["max"], color="tab:red", alpha=0.15,
                                label="random: min-max over seeds")
            share_ax.plot(stats.index, group.groupby("k")["difference_share"].mean(), color="tab:red", marker=".",
                          label="random subspaces (mean)")
            continue
        colour, marker = next((c, m) for key, (c, m) in {**POINTS, "": ("tab:brown", "P")}.items()
                              if method.startswith(key))
        label, colour, marker = LINES.get(method, (method, colour, marker))
        errors = [group["iia"] - group["iia_ci_low"], group["iia_ci_high"] - group["iia"]]
        style = {"marker": marker, "color": colour, "label": label, "capsize": 3}
        if method not in LINES:  # one subspace (the probe, boundless DAS, a loaded one): a point at its k
            style.update(linestyle="none", markersize=8)
            label = f"{method} (k={', '.join(map(str, group['k']))})"
            style["label"] = label
        iia_ax.errorbar(group["k"], group["iia"], yerr=errors, **style)
        share_ax.plot(group["k"], group["difference_share"], marker=marker, color=colour, label=label,
                      linestyle="-" if method in LINES else "none")
    n = int(frame["n_heldout"].max())
    iia_ax.set(xscale="log", xlabel="subspace dimension k", ylabel=f"held-out IIA (95% Wilson, n={n})",
               ylim=(-0.03, 1.03), title="held-out IIA")
    share_ax.set(xscale="log", xlabel="subspace dimension k", ylabel="share of E|x_cf - x|^2 (held-out)",
                 ylim=(-0.03, 1.03), title="what each subspace holds of the pairs' difference")
    iia_ax.legend(fontsize=6)
    share_ax.legend(fontsize=6)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def initials(names: Sequence[str]) -> dict[str, str]:
    """A short code per name from the initials of its words (pointer_following -> PF), made unique."""
    out: dict[str, str] = {}
    for name in names:
        code = "".join(word[0] for word in name.split("_")).upper()
        out[name] = code if code not in out.values() else f"{code}{len(out)}"
    return out


VERDICT_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def verdict_panels(table: Any, hypotheses: Sequence[str], title: str):
    """One layer x role panel per counterfactual kind, each cell coloured by its verdict: the
    hypothesis that alone explains it, a tie (light grey), undetermined (pale yellow), none (dark
    grey) or no effect (white)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    labels = [*hypotheses, "tie", "undetermined", "none", "no effect"]
    short = initials(hypotheses)
    colours = [*VERDICT_COLOURS[: len(hypotheses)], "#bdbdbd", "#fff5c2", "#3d3d3d", "#ffffff"]
    kinds = list(dict.fromkeys(table["counterfactual"]))
    columns = min(4, len(kinds))
    rows = -(-len(kinds) // columns)
    figure = new_figure(3.6 * columns + 0.6, 3.4 * rows + 1.0, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(kinds):]:
        ax.set_visible(False)
    for ax, kind in zip(axes.flat, kinds):
        part = table[table["counterfactual"] == kind]
        roles, layers = list(dict.fromkeys(part["role"])), sorted(set(part["layer"]))
        codes = np.full((len(layers), len(roles)), np.nan)
        for row in part.itertuples():
            codes[layers.index(row.layer), roles.index(row.role)] = labels.index(row.verdict)
        ax.imshow(codes, aspect="auto", origin="lower", cmap=ListedColormap(colours), vmin=-0.5,
                  vmax=len(labels) - 0.5, interpolation="nearest")
        for row in part.itertuples():  # a cell with an effect: the initials of the hypotheses that carry it
            if row.verdict != "no effect" and isinstance(row.carrying, str) and row.carrying:
                text = " ".join(short[name] for name in row.carrying.split(", "))
                ax.text(roles.index(row.role), layers.index(row.layer), text, ha="center", va="center",
                        fontsize=max(3.5, 7 - len(layers) / 8))
        ax.set_xticks(range(len(roles)), roles, rotation=70, fontsize=6)
        ax.set_yticks(range(len(layers)), layers, fontsize=5 if len(layers) > 12 else 7)
        ax.set(title=kind, ylabel="layer")
    keys = ", ".join(f"{code} {name}" for name, code in short.items())
    figure.legend(handles=[Patch(facecolor=c, edgecolor="black", linewidth=0.3, label=label)
                           for label, c in zip(labels, colours)], loc="outside lower center", ncol=len(labels),
                  fontsize=7, title=f"verdict; letters in a cell: the hypotheses that carry it ({keys})",
                  title_fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure
