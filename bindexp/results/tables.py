"""The comparison's tables: eval runs as a tidy table (one row per run x hops x seq_len) and its
aggregate over seeds (mean with a 95% Student-t interval over runs, and the pooled Wilson
interval; runs that differ in any setting besides the seed are never averaged together: such
settings join the grouping), and the analysis runs' summary numbers averaged over seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bindexp.errors import InputError
from bindexp.io.folder import RESULTS_FILE
from bindexp.jobs.registry import ANALYSIS_JOB_TYPES
from bindexp.plots.accuracy import cell_text
from bindexp.results.records import BOOKKEEPING, RunRecord, measured_settings
from bindexp.stats import INTERVAL_NOTE, mean_interval, wilson_interval

DEFAULT_BY = ["model", "hops", "seq_len"]
RUN_COLUMNS = ["run_id", "run_name", "group", "sweep"]
CONFIG_COLUMNS = ["model", "task", "seed", "shots", "template", "systematic_only"]
CELL_COLUMNS = ["hops", "seq_len", "n", "correct", "accuracy", "ci_low", "ci_high"]
CELL_SETTINGS = {"hops", "seq_len"}  # a run's cells carry these


def run_cells(record: RunRecord) -> pd.DataFrame:
    """One row per (hops, seq_len) of a run: n, correct. From results.jsonl, else the summary."""
    path = record.local_file(RESULTS_FILE)
    if path is None and not _summary_suffices(record):
        path = record.file(RESULTS_FILE)
    if path is not None:
        results = pd.read_json(path, lines=True, dtype={"hops": "Int64", "seq_len": "Int64"})
        if "hops" not in results:
            results["hops"] = pd.NA
        cells = (results.assign(correct=results["correct"].astype(int))
                 .groupby(["hops", "seq_len"], dropna=False)["correct"].agg(["size", "sum"]).reset_index())
        return cells.rename(columns={"size": "n", "sum": "correct"})
    return _cells_from_summary(record)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [] if value is None else [value]


def _summary_suffices(record: RunRecord) -> bool:
    """The summary gives every cell when the run covers one seq_len or one hops value."""
    hops, lengths = _as_list(record.config.get("hops")), _as_list(record.config.get("seq_len"))
    by_hops, by_len = record.summary.get("by_hops"), record.summary.get("by_seq_len")
    return (len(lengths) == 1 and (bool(by_hops) or "accuracy" in record.summary)) or (
        len(hops) == 1 and bool(by_len))


def _cells_from_summary(record: RunRecord) -> pd.DataFrame:
    hops, lengths = _as_list(record.config.get("hops")), _as_list(record.config.get("seq_len"))
    summary = record.summary
    rows = []
    if len(lengths) == 1 and summary.get("by_hops"):
        for key, cell in summary["by_hops"].items():
            rows.append((int(key), int(lengths[0]), cell["n"], cell["accuracy"]))
    elif len(lengths) == 1 and "accuracy" in summary:  # a task without hops
        rows.append((pd.NA, int(lengths[0]), summary["n_programs"], summary["accuracy"]))
    elif len(hops) == 1 and summary.get("by_seq_len"):
        for key, cell in summary["by_seq_len"].items():
            rows.append((int(hops[0]), int(key), cell["n"], cell["accuracy"]))
    else:
        raise InputError(f"run {record.run_id}: no results.jsonl and its summary does not split hops x seq_len")
    return pd.DataFrame(
        [{"hops": h, "seq_len": s, "n": int(n), "correct": int(round(acc * n))} for h, s, n, acc in rows]
    ).astype({"hops": "Int64", "seq_len": "Int64"})


def setting_columns(records: Sequence[RunRecord]) -> list[str]:
    """CONFIG_COLUMNS, then every other setting any of the runs has (not bookkeeping, not hops/seq_len)."""
    reserved = BOOKKEEPING | CELL_SETTINGS | set(CONFIG_COLUMNS) | set(RUN_COLUMNS) | set(CELL_COLUMNS)
    others = {key for record in records for key in record.config if key not in reserved and not key.startswith("_")}
    return [*CONFIG_COLUMNS, *sorted(others)]


def _setting_value(value: Any) -> Any:
    """A setting as a table cell: lists and mappings as JSON text (hashable, groupable)."""
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (list, tuple, dict)) else value


def tidy_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per (run, hops, seq_len) of eval runs, with every setting of the run and a Wilson interval."""
    records = [r for r in records if r.job_type in (None, "eval") and "accuracy" in r.summary]
    settings = setting_columns(records)
    frames = []
    for record in records:
        cells = run_cells(record)
        run_info = {"run_id": record.run_id, "run_name": record.name, "group": record.group, "sweep": record.sweep}
        for column in settings:
            run_info[column] = _setting_value(record.config.get(column))
        frames.append(cells.assign(**run_info))
    columns = [*RUN_COLUMNS, *settings, *CELL_COLUMNS]
    if not frames:
        return pd.DataFrame(columns=columns)
    tidy = pd.concat(frames, ignore_index=True)
    tidy["accuracy"] = tidy["correct"] / tidy["n"]
    bounds = [wilson_interval(int(c), int(n)) for c, n in zip(tidy["correct"], tidy["n"])]
    tidy["ci_low"], tidy["ci_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    tidy = tidy.astype({"hops": "Int64", "seq_len": "Int64", "n": int, "correct": int})
    return tidy[columns].sort_values(["model", "hops", "seq_len", "seed", "run_id"], ignore_index=True)


def differing_settings(tidy: pd.DataFrame, by: Sequence[str]) -> list[str]:
    """Settings besides the seed (and not in `by`) that differ between the runs of `tidy`."""
    fixed = {*RUN_COLUMNS, *CELL_COLUMNS, "seed", *by}
    return [c for c in tidy.columns if c not in fixed and tidy[c].astype(str).nunique(dropna=False) > 1]


def aggregate(tidy: pd.DataFrame, by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """Accuracy per group of `by`: the mean over runs with its 95% Student-t interval
    (`bindexp.stats.mean_interval`, clipped to [0, 1]; nan with one run), and the pooled accuracy over
    all programs with its Wilson interval. A run's accuracy in a group is its correct / n over the
    group's cells. Only seeds are averaged: every other setting that differs between the runs
    (`differing_settings`) is added to the grouping, after `by`."""
    by = list(by)
    unknown = [c for c in by if c not in tidy.columns]
    if unknown:
        raise InputError(f"cannot group by {unknown[0]!r}; columns are {', '.join(tidy.columns)}")
    by = [*by, *differing_settings(tidy, by)]
    columns = [*by, "runs", "n", "accuracy", "ci_low", "ci_high", "pooled_accuracy", "pooled_ci_low", "pooled_ci_high"]
    if tidy.empty:
        return pd.DataFrame(columns=columns)
    per_run = tidy.groupby([*by, "run_id"], dropna=False)[["n", "correct"]].sum().reset_index()
    per_run["accuracy"] = per_run["correct"] / per_run["n"]
    rows = []
    for key, group in per_run.groupby(by, dropna=False, sort=True):
        mean, low, high = mean_interval(group["accuracy"].tolist())
        low, high = float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1))  # stays in [0, 1]; nan stays nan
        n, correct = int(group["n"].sum()), int(group["correct"].sum())
        pooled_low, pooled_high = wilson_interval(correct, n)
        rows.append({**dict(zip(by, key)), "runs": len(group), "n": n, "accuracy": mean, "ci_low": low,
                     "ci_high": high, "pooled_accuracy": correct / n, "pooled_ci_low": pooled_low,
                     "pooled_ci_high": pooled_high})
    return pd.DataFrame(rows, columns=columns)


def markdown_table(table: pd.DataFrame, by: Sequence[str] | None = None) -> str:
    """The aggregate as a markdown table: mean [95% t interval over runs], pooled [Wilson 95% CI].
    Its key columns are those before `runs` (`by` plus the settings that differ); `by` is unused."""
    by = list(table.columns[:list(table.columns).index("runs")])
    head = [*by, "runs", "n", "accuracy", "95% t-CI (runs)", "pooled", "95% Wilson CI (programs)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in table.to_dict("records"):
        cells = [cell_text(row[c]) for c in by] + [str(row["runs"]), str(row["n"]), f"{row['accuracy']:.3f}",
                                               _interval(row["ci_low"], row["ci_high"]),
                                               f"{row['pooled_accuracy']:.3f}",
                                               _interval(row["pooled_ci_low"], row["pooled_ci_high"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nIntervals: {INTERVAL_NOTE}.\n"


def _interval(low: float, high: float) -> str:
    return "–" if low is None or math.isnan(low) else f"[{low:.3f}, {high:.3f}]"


def plot_table(table: pd.DataFrame) -> pd.DataFrame:
    """The aggregate for `bindexp.plots.accuracy.aggregate_figures`: settings that differ besides model x hops x seq_len are
    folded into the hops label (`1 (shots=0)`), so each line still means one setting."""
    extra = [c for c in table.columns[:list(table.columns).index("runs")] if c not in DEFAULT_BY]
    if not extra:
        return table
    labels = [f"{cell_text(h)} ({', '.join(f'{c}={cell_text(row[c])}' for c in extra)})"
              for h, (_, row) in zip(table["hops"], table.iterrows())]
    return table.assign(hops=labels)



# ---------------------------------------------------------------- analysis runs


def flat_numbers(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """(dotted key, number) for every int/float/bool leaf of nested dicts (lists and text skipped)."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flat_numbers(value, name + ".")
        elif isinstance(value, (bool, int, float)) and not key.startswith("_"):
            yield name, float(value)


def summary_scalars(records: Sequence[RunRecord], job_types: Sequence[str] = ANALYSIS_JOB_TYPES) -> pd.DataFrame:
    """One row per (run, numeric summary key) of the analysis runs: run_id, job_type, model, seed,
    the run's grouping settings (as JSON), key, value."""
    rows = []
    for record in records:
        if record.job_type not in job_types:
            continue
        grouping = measured_settings(record)
        for key, value in flat_numbers(record.summary):
            rows.append({"run_id": record.run_id, "job_type": record.job_type, "model": record.config.get("model"),
                         "seed": record.config.get("seed"), "settings": json.dumps(grouping, default=str),
                         "key": key, "value": value})
    return pd.DataFrame(rows, columns=["run_id", "job_type", "model", "seed", "settings", "key", "value"])


def aggregate_scalars(scalars: pd.DataFrame) -> pd.DataFrame:
    """Mean over runs (seeds) per job_type, settings and key, with its 95% interval over runs
    (`bindexp.stats.mean_interval`; nan with one run). Settings that differ between the runs of a
    job type become columns, so each row says what it is."""
    columns = ["job_type", "model", "key", "runs", "mean", "ci_low", "ci_high"]
    if scalars.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (job_type, settings_json, key), group in scalars.groupby(["job_type", "settings", "key"], sort=True):
        mean, low, high = mean_interval(group["value"].tolist())
        rows.append({"job_type": job_type, "settings": settings_json, "model": group["model"].iloc[0], "key": key,
                     "runs": group["run_id"].nunique(), "mean": mean, "ci_low": low, "ci_high": high})
    table = pd.DataFrame(rows)
    varying: list[str] = []
    for _, part in table.groupby("job_type"):
        decoded = [json.loads(s) for s in part["settings"].unique()]
        for name in sorted({k for d in decoded for k in d}):
            if name != "model" and name not in varying and len({json.dumps(d.get(name), default=str) for d in decoded}) > 1:
                varying.append(name)
    for name in varying:
        table[name] = [json.loads(s).get(name) for s in table["settings"]]
    return table[["job_type", "model", *varying, "key", "runs", "mean", "ci_low", "ci_high"]]
