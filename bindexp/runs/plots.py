"""The accuracy plot every runner draws (eval, the notebook Experiment, compare).

Figures are `matplotlib.figure.Figure` objects made without pyplot, so plotting never switches
or needs a backend (a notebook's stays as it is) and no figure is left open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bindexp.runs.reporting import accuracy_table, value_text


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


def save_accuracy_plot(results: pd.DataFrame, path: Path, title: str = "") -> Path:
    """An eval run's plot from its per-program results: accuracy against hops (one line per
    seq_len), or against seq_len for tasks without hops; saved as PNG."""
    x, line = ("hops", "seq_len") if results["hops"].notna().any() else ("seq_len", None)
    figure = new_figure(5, 3.5)
    ax = figure.subplots()
    plot_accuracy(ax, accuracy_table(results, [line, x] if line else [x]), x, line)
    ax.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
