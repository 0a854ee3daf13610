"""Accuracy tables and summaries from per-program results (the plot: bindexp.runs.plots)."""

from __future__ import annotations

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
                value_text(row[by]): {k: row[k] for k in ("accuracy", "ci_low", "ci_high", "n")}
                for row in table.to_dict("records")
            }
    return summary


def value_text(value: Any) -> str:
    """A value as a summary key or plot label: `2` for 2.0, `–` for None or NaN."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)
