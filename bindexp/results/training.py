"""Training runs compared: one row per run (its settings, how far it got, its phase boundaries and
final metrics, each with its Wilson interval and n), the metrics over seeds (the mean with its 95%
Student-t interval over runs, and the pooled accuracy with its Wilson interval, as for eval runs),
and each setting group's validation history (mean over seeds, band from the lowest to the highest
run) for the figure. Runs are averaged as seeds only when every other setting is the same."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bindexp.io.folder import HISTORY_FILE
from bindexp.io.streams import read_lines
from bindexp.results.records import RunRecord, measured_settings
from bindexp.stats import mean_interval, wilson_interval
from bindexp.vocab import PHASE_KEYS, STEP_KEY

TRAIN_JOB = "train"
RUN_FACTS = ["steps_done", "completed", "n_params", "heuristic_plateau", *PHASE_KEYS]
HISTORY_KEYS = ("validation/accuracy_hops", "validation/accuracy_heuristic_wrong")  # the figure's curves


def training_records(records: Sequence[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.job_type == TRAIN_JOB]


def final_metrics(summary: dict[str, Any]) -> dict[str, tuple[float, float, float, int]]:
    """{metric: (value, ci_low, ci_high, n)} for every number of the summary reported with its
    interval and n (`systematic/accuracy`, `test/accuracy_hops2` ...)."""
    metrics = {}
    for key, value in summary.items():
        n, low, high = summary.get(f"{key}_n"), summary.get(f"{key}_ci_low"), summary.get(f"{key}_ci_high")
        if all(_number(x) for x in (value, low, high)) and _number(n) and int(n) > 0:
            metrics[key] = (float(value), float(low), float(high), int(n))
    return dict(sorted(metrics.items()))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _settings_key(record: RunRecord) -> str:
    return json.dumps(measured_settings(record), sort_keys=True, default=str)


def varying_settings(records: Sequence[RunRecord]) -> list[str]:
    """Settings (besides the seed and bookkeeping) that differ between the runs."""
    decoded = [measured_settings(r) for r in records]
    names = sorted({k for d in decoded for k in d})
    return [n for n in names if len({json.dumps(d.get(n), sort_keys=True, default=str) for d in decoded}) > 1]


def train_runs_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per training run: run, seed, the settings that differ between runs, how far it got,
    its phase boundaries and every final metric with `_ci_low`, `_ci_high`, `_n`."""
    runs = training_records(records)
    varying = varying_settings(runs)
    rows = []
    for record in runs:
        row: dict[str, Any] = {"run_id": record.run_id, "run_name": record.name, "group": record.group,
                               "seed": record.config.get("seed")}
        row.update({name: _cell(record.config.get(name)) for name in varying})
        row.update({fact: record.summary.get(fact) for fact in RUN_FACTS})
        for key, (value, low, high, n) in final_metrics(record.summary).items():
            row.update({key: value, f"{key}_ci_low": low, f"{key}_ci_high": high, f"{key}_n": n})
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (list, tuple, dict)) else value


def aggregate_training(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Per setting group and final metric: runs, the mean over runs with its 95% Student-t interval,
    and the pooled accuracy over every program with its Wilson interval and n; per phase boundary:
    the mean step over the runs that reached it (t interval) and how many did."""
    runs = training_records(records)
    varying = varying_settings(runs)
    groups: dict[str, list[RunRecord]] = {}
    for record in runs:
        groups.setdefault(_settings_key(record), []).append(record)
    rows = []
    for _, members in sorted(groups.items()):
        shared = {name: _cell(members[0].config.get(name)) for name in varying}
        metrics: dict[str, list[tuple[float, float, float, int]]] = {}
        for record in members:
            for key, value in final_metrics(record.summary).items():
                metrics.setdefault(key, []).append(value)
        for key, values in sorted(metrics.items()):
            mean, low, high = mean_interval([v[0] for v in values])
            n = sum(v[3] for v in values)
            correct = sum(round(v[0] * v[3]) for v in values)
            pooled_low, pooled_high = wilson_interval(correct, n)
            rows.append({**shared, "metric": key, "runs": len(values), "mean": mean,
                         "ci_low": float(np.clip(low, 0, 1)) if not math.isnan(low) else low,
                         "ci_high": float(np.clip(high, 0, 1)) if not math.isnan(high) else high,
                         "pooled": correct / n, "pooled_ci_low": pooled_low, "pooled_ci_high": pooled_high, "n": n})
        for key in PHASE_KEYS:
            reached = [float(r.summary[key]) for r in members if _number(r.summary.get(key))]
            mean, low, high = mean_interval(reached) if reached else (math.nan, math.nan, math.nan)
            rows.append({**shared, "metric": key, "runs": len(members), "reached": len(reached), "mean": mean,
                         "ci_low": low, "ci_high": high})
    columns = [*varying, "metric", "runs", "reached", "mean", "ci_low", "ci_high", "pooled", "pooled_ci_low",
               "pooled_ci_high", "n"]
    return pd.DataFrame(rows, columns=columns).astype({"reached": "Int64", "n": "Int64"})


def read_history(record: RunRecord) -> list[dict[str, Any]] | None:
    """The run's history.jsonl (None when it has none or it cannot be read)."""
    path = record.file(HISTORY_FILE)
    if path is None:
        return None
    try:
        rows = read_lines(path)
    except (OSError, ValueError):
        return None
    return [row for row in rows if isinstance(row, dict) and _number(row.get(STEP_KEY))]


def history_bands(records: Sequence[RunRecord]) -> list[tuple[str, int, pd.DataFrame]]:
    """Per setting group: (its label, runs with a history, a frame of step, key, mean, low, high, runs):
    each validation key of the figure (accuracy by hops, heuristic-wrong) at each step, the mean over
    the runs that logged it and the band from the lowest to the highest."""
    runs = training_records(records)
    varying = varying_settings(runs)
    groups: dict[str, list[tuple[RunRecord, list[dict[str, Any]]]]] = {}
    for record in runs:
        history = read_history(record)
        if history:
            groups.setdefault(_settings_key(record), []).append((record, history))
    bands = []
    for _, members in sorted(groups.items()):
        points = [{"step": row[STEP_KEY], "key": key, "value": value, "run": record.run_id}
                  for record, history in members for row in history for key, value in row.items()
                  if key.startswith(HISTORY_KEYS) and _number(value)]
        if not points:
            continue
        frame = (pd.DataFrame(points).groupby(["key", "step"])["value"]
                 .agg(mean="mean", low="min", high="max", runs="count").reset_index())
        config = members[0][0].config
        label = ", ".join(f"{name}={_cell(config.get(name))}" for name in varying) or "all runs"
        bands.append((label, len(members), frame))
    return bands
