"""A training run's figures: its history (accuracies by group, loss) with the phase boundaries, and
the mechanism over training (a patch metric per role against the training step)."""

from __future__ import annotations

import textwrap
from typing import Any

from bindexp.plots.figure import new_figure
from bindexp.vocab import STEP_KEY


def plot_training_curves(ax: Any, history: list[dict[str, Any]], keys: Any, plateau: float | None = None) -> None:
    """Each history key present in `keys` against the training step (`STEP_KEY`); the heuristic
    plateau as a dotted line."""
    for key in keys:
        points = [(row[STEP_KEY], row[key]) for row in history if key in row]
        if points:
            ax.plot(*zip(*points), label=key, linewidth=1.2)
    if plateau is not None:
        ax.axhline(plateau, color="grey", linestyle=":", label=f"heuristic plateau ({plateau:.2f})")
    ax.set(ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.legend(fontsize=7, loc="best")


def mark_phases(axes: Any, boundaries: dict[str, int | None]) -> None:
    """Dashed vertical lines at the phase boundaries found (`PHASE_KEYS`), named on the first axes."""
    for name, step in boundaries.items():
        if step is None:
            continue
        for ax in axes:
            ax.axvline(step, color="black", linestyle="--", linewidth=1)
        axes[0].annotate(name.removesuffix("_step").replace("_", " "), (step, 1), xycoords=("data", "axes fraction"),
                         rotation=90, va="top", ha="right", fontsize=7)


def training_history_keys(history: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The accuracy keys of a training history, grouped for plotting: validation overall and by
    heuristic label, by hops, and the generalisation sets (held-out pairs, longer, more hops)."""
    keys = list(dict.fromkeys(key for row in history for key in row
                              if "/accuracy" in key and not key.endswith(("_ci_low", "_ci_high", "_n"))))
    validation = [k for k in keys if k.startswith("validation/") and "hops" not in k]
    return {"validation": validation,
            "by hops": [k for k in keys if k.startswith("validation/accuracy_hops")],
            "generalisation": [k for k in keys if not k.startswith(("validation/", "test/"))]}


def plot_training(history: list[dict[str, Any]], plateau: float | None, boundaries: dict[str, int | None],
                  title: str = ""):
    """A training run's history: validation accuracy (overall, heuristic-right, heuristic-wrong),
    validation accuracy by hops, the generalisation sets' accuracy, and the training loss (log
    scale), against the training step; phase boundaries dashed."""
    groups = {name: keys for name, keys in training_history_keys(history).items() if keys}
    figure = new_figure(9, 2.6 * (len(groups) + 1) + 0.6)
    axes = figure.subplots(len(groups) + 1, 1, sharex=True)
    for ax, (name, keys) in zip(axes, groups.items()):
        plot_training_curves(ax, history, keys, plateau if name == "validation" else None)
        ax.set_ylabel(f"{name}\naccuracy")
    losses = [(row[STEP_KEY], row["train/loss"]) for row in history if "train/loss" in row]
    axes[-1].set_ylabel("training loss")
    if losses:
        axes[-1].plot(*zip(*losses), color="black", linewidth=0.8, label="train/loss")
        axes[-1].set_yscale("log")
    mark_phases(axes, boundaries)
    axes[0].set_title("\n".join(textwrap.wrap(title, 100)), fontsize=10)
    axes[-1].set_xlabel("training step")
    figure.tight_layout()
    return figure


TRAINING_CURVES = ("validation/accuracy", "validation/accuracy_heuristic_wrong", "heldout/accuracy")


def plot_over_training(per_step: dict[int, dict], metric: str, training: Any, title: str = ""):
    """The metric (best over layers) against the training step, one line per role; below it the
    training run's accuracy (`training`: its history, heuristic plateau and phase boundaries); dashed
    vertical lines at the phase boundaries found."""
    panels = 2 if training.history else 1
    figure = new_figure(9, 3.6 * panels + 0.6)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    steps = sorted(per_step)
    roles = list(dict.fromkeys(role for step in steps for role in per_step[step]["best_layer_by_column"]))
    for role in roles:
        values = [per_step[s]["best_layer_by_column"].get(role, {}).get(metric, float("nan")) for s in steps]
        axes[0].plot(steps, values, marker="o", label=role)
    axes[0].set(ylabel=f"{metric}\n(best over layers)")
    axes[0].set_title("\n".join(textwrap.wrap(title, 90)), fontsize=10)
    axes[0].legend(fontsize=7, ncol=2, loc="best")
    if training.history:
        plot_training_curves(axes[1], training.history, TRAINING_CURVES, training.heuristic_plateau)
        axes[1].set(ylabel="training accuracy")
    mark_phases(axes, training.boundaries)
    axes[-1].set_xlabel("training step")
    figure.tight_layout()
    return figure


HOP_CURVES = tuple(f"validation/accuracy_hops{h}" for h in range(1, 9))


def plot_routes_over_training(best: Any, training: Any, title: str = ""):
    """Each attention route's best head (`best`: one row per route and step -- step, route, layer,
    head, attention ...) against the training step, one line per route labelled with the (layer,
    head) of the last step; below it the training run's validation accuracy by hops; dashed lines
    at the phase boundaries."""
    panels = 2 if training.history else 1
    figure = new_figure(9, 3.6 * panels + 0.6)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    for route, curve in best.groupby("route", sort=False):
        curve = curve.sort_values("step")
        last = curve.iloc[-1]
        axes[0].plot(curve["step"], curve["attention"], marker="o", markersize=3,
                     label=f"{route} (last: L{int(last['layer'])} H{int(last['head'])})")
    axes[0].set(ylabel="attention of the best head", ylim=(-0.02, 1.02))
    axes[0].set_title("\n".join(textwrap.wrap(title, 90)), fontsize=10)
    axes[0].legend(fontsize=7, loc="best")
    if training.history:
        keys = [k for k in HOP_CURVES if any(k in row for row in training.history)]
        plot_training_curves(axes[1], training.history, tuple(keys), training.heuristic_plateau)
        axes[1].set(ylabel="validation accuracy")
    mark_phases(axes, training.boundaries)
    axes[-1].set_xlabel("training step")
    figure.tight_layout()
    return figure


def plot_training_bands(bands: list[tuple[str, int, Any]], title: str = ""):
    """Training runs compared: per setting group (a panel), each validation curve (`bands`' frames:
    step, key, mean, low, high, runs) as the mean over the group's runs with a band from the lowest
    to the highest run, against the training step."""
    figure = new_figure(9, 2.8 * max(1, len(bands)) + 0.6)
    axes = figure.subplots(max(1, len(bands)), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, runs, frame) in zip(axes, bands):
        for key, curve in frame.groupby("key", sort=True):
            curve = curve.sort_values("step")
            line, = ax.plot(curve["step"], curve["mean"], linewidth=1.2, label=key.removeprefix("validation/"))
            ax.fill_between(curve["step"], curve["low"], curve["high"], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set(ylabel="validation accuracy", ylim=(-0.02, 1.02))
        ax.set_title("\n".join(textwrap.wrap(f"{label}: mean of {runs} run{'s' if runs != 1 else ''} "
                                             "(band: lowest to highest)", 100)), fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    lines = textwrap.wrap(title, 100) if title else []
    if lines:
        figure.suptitle("\n".join(lines), fontsize=10)
    axes[-1].set_xlabel("training step")
    height = figure.get_figheight()  # keep the suptitle's lines clear of the first panel's title
    figure.tight_layout(rect=(0, 0, 1, 1 - (0.22 * len(lines) + 0.1) / height if lines else 1))
    return figure
