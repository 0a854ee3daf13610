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
