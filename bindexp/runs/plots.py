"""The accuracy plot every runner draws (eval, the notebook Experiment, compare).

Figures are `matplotlib.figure.Figure` objects made without pyplot, so plotting never switches
or needs a backend (a notebook's stays as it is) and no figure is left open.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from bindexp.runs.reporting import accuracy_table, value_text
from bindexp.vocab import STEP_KEY


def new_figure(width: float, height: float):
    """A figure made without pyplot (saving it needs no backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def plot_accuracy(ax: Any, table: pd.DataFrame, x: str, line: str | None = None) -> None:
    """Accuracy against `x` with its interval (`accuracy`, `ci_low`, `ci_high` columns of `table`),
    one line per value of `line`."""
    groups = table.groupby(line, dropna=False, sort=True) if line else [(None, table)]
    for value, part in groups:
        part = part.sort_values(x)
        ax.errorbar(part[x].astype(float), part["accuracy"],
                    yerr=[part["accuracy"] - part["ci_low"], part["ci_high"] - part["accuracy"]],
                    marker="o", capsize=3, label=f"{line}={value_text(value)}" if line else None)
    ax.set(xlabel=x, ylabel="accuracy", ylim=(-0.02, 1.02))
    if line:
        ax.legend(fontsize=8)


def integer_ticks(ax: Any, values: Any) -> None:
    """x ticks at the integer values present (one value gives one tick, not 1.900 ... 2.100)."""
    ticks = sorted({int(v) for v in pd.Series(values).dropna()})
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlim(ticks[0] - 0.5, ticks[-1] + 0.5)


def reference_lines(ax: Any, results: pd.DataFrame, x: str, task: str | None) -> None:
    """Chance (1 / number of candidate answers) and, where programs carry the label, the
    line-1/line-2 heuristic's accuracy (the share of programs whose answer is the constant
    assigned on line 1 or line 2) at each x."""
    candidates = _candidates(task)
    if candidates:
        ax.axhline(1 / len(candidates), color="grey", linestyle=":", linewidth=1,
                   label=f"chance (1/{len(candidates)})")
    if "heuristic" in results and results["heuristic"].notna().any():
        rates = (results.dropna(subset=["heuristic"]).assign(heuristic=lambda f: f["heuristic"].astype(float))
                 .groupby(x)["heuristic"].mean())
        ax.plot(rates.index.astype(float), rates.values, color="grey", linestyle="--", marker="x", linewidth=1,
                label="line-1/line-2 heuristic")


def _candidates(task: str | None) -> tuple[str, ...] | None:
    if task is None:
        return None
    from bindexp.tasks.registry import get_task

    try:
        return get_task(task).candidates
    except Exception:  # noqa: BLE001 - a task this process does not know: no chance line
        return None


def save_accuracy_plot(results: pd.DataFrame, path: Path, title: str = "", *, task: str | None = None,
                       shots: int | None = None) -> Path:
    """An eval run's plot from its per-program results: accuracy against hops (one line per
    seq_len), or against seq_len for tasks without hops, with 95% Wilson intervals, integer x
    ticks, chance and (binding) the line-1/line-2 heuristic as reference lines; saved as PNG.
    Title: `title` (the model), the task, the shots and the number of programs."""
    x, line = ("hops", "seq_len") if results["hops"].notna().any() else ("seq_len", None)
    task = task or (str(results["task"].iloc[0]) if "task" in results and len(results) else None)
    figure = new_figure(5.5, 3.8)
    ax = figure.subplots()
    plot_accuracy(ax, accuracy_table(results, [line, x] if line else [x]), x, line)
    reference_lines(ax, results, x, task)
    integer_ticks(ax, results[x])
    ax.set_ylabel("accuracy (95% Wilson interval)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    head = " on ".join(w for w in (title, task) if w)
    words = [head, f"{shots}-shot" if shots is not None else None, f"n={len(results)} programs"]
    ax.set_title(", ".join(w for w in words if w), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


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
