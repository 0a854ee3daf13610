"""Accuracy tables, summaries and plots from per-program results."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

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


def eval_summary(results: pd.DataFrame) -> dict[str, Any]:
    """Overall accuracy plus accuracy by hops, by seq_len and by heuristic label."""
    correct, n = int(results["correct"].sum()), len(results)
    low, high = wilson_interval(correct, n)
    summary: dict[str, Any] = {
        "accuracy": correct / n if n else float("nan"),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "n_programs": n,
    }
    for by in ("hops", "seq_len", "heuristic"):
        if by in results and results[by].notna().any():
            table = accuracy_table(results, [by])
            summary[f"by_{by}"] = {
                _key(row[by]): {k: row[k] for k in ("accuracy", "ci_low", "ci_high", "n")}
                for row in table.to_dict("records")
            }
    return summary


def _key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def accuracy_plot(results: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Accuracy against hops (one line per seq_len) with 95% intervals; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = "hops" if results["hops"].notna().any() else "seq_len"
    series = "seq_len" if x == "hops" else None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    groups = results.groupby(series) if series else [(None, results)]
    for label, group in groups:
        table = accuracy_table(group, [x])
        ax.errorbar(
            table[x], table["accuracy"],
            yerr=[table["accuracy"] - table["ci_low"], table["ci_high"] - table["accuracy"]],
            marker="o", capsize=3, label=f"{series}={_key(label)}" if series else None,
        )
    ax.set(xlabel=x, ylabel="accuracy", ylim=(-0.02, 1.02), title=title)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
