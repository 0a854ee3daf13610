"""Accuracy with 95% Wilson intervals: the table and the plot every runner draws (eval, the
notebook Experiment, compare)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from bindexp.plots.figure import new_figure
from bindexp.stats import wilson_interval


def accuracy_table(results: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Accuracy with its 95% Wilson interval for each group of `by`."""
    rows = []
    for key, group in results.dropna(subset=list(by)).groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        correct, n = int(group["correct"].sum()), len(group)
        low, high = wilson_interval(correct, n)
        rows.append({**dict(zip(by, key)), "n": n, "accuracy": correct / n, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=[*by, "n", "accuracy", "ci_low", "ci_high"])


def value_text(value: Any) -> str:
    """A value as a summary key or plot label: `2` for 2.0, `–` for None or NaN."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def cell_text(value: Any) -> str:
    """A table cell or panel title: `–` for None or NaN, else the value as it is."""
    return "–" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


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


def accuracy_figure(results: pd.DataFrame, title: str = "", *, task: str | None = None, shots: int | None = None):
    """An eval run's plot from its per-program results: accuracy against hops (one line per
    seq_len), or against seq_len for tasks without hops, with 95% Wilson intervals, integer x
    ticks, chance and (where programs carry it) the line-1/line-2 heuristic as reference lines.
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
    return figure


def aggregate_figures(table: pd.DataFrame) -> dict[str, Any]:
    """Accuracy against seq_len of an aggregate table (compare): `model` -> one panel per model (a
    line per hops), `hops` -> one panel per hops (a line per model). A group of one run has no
    interval over runs; it shows its pooled (Wilson) interval."""
    table = table.assign(ci_low=table["ci_low"].where(table["ci_low"].notna(), table["pooled_ci_low"]),
                         ci_high=table["ci_high"].where(table["ci_high"].notna(), table["pooled_ci_high"]))
    figures = {}
    for panel, line in (("model", "hops"), ("hops", "model")):
        panels = list(pd.unique(table[panel]))
        if not panels:
            continue
        figure = new_figure(4 * len(panels), 3.3)
        axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)
        for ax, value in zip(axes[0], panels):
            part = table[_equal(table[panel], value)]
            plot_accuracy(ax, part, "seq_len", line)
            ax.set(title=f"{panel}={cell_text(value)}", ylabel="")
            ax.set_xticks(sorted(float(v) for v in part["seq_len"].dropna().unique()))
        axes[0][0].set_ylabel("accuracy (mean over runs, 95% CI)")
        figure.tight_layout()
        figures[panel] = figure
    return figures


def _equal(column: pd.Series, value: Any) -> pd.Series:
    return column.isna() if value is None or (not isinstance(value, str) and pd.isna(value)) else column == value
