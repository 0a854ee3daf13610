"""Analysis runs (attention, lens, subspace, locate) compared: every numeric value of their summaries,
averaged over the runs that differ only in their seed, with a 95% interval over those runs.

    scalars = summary_scalars(records)       # one row per run x summary key (nested keys joined by ".")
    table = aggregate_scalars(scalars)       # job_type, model, the settings that differ, key, runs, mean, CI
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from bindexp.results.records import RunRecord
from bindexp.stats import mean_interval

ANALYSIS_JOB_TYPES = ("attention", "lens", "subspace", "locate")
SCALARS_FILE = "analysis_scalars.csv"
AGGREGATE_FILE = "analysis_aggregate.csv"
# settings that may differ between runs averaged together (the seed, bookkeeping, W&B, speed)
NOT_GROUPING = {"seed", "run_name", "group", "tags", "output_dir", "progress", "wandb_mode", "project", "entity",
                "batch_size", "pairs_per_chunk", "model_info", "device", "causal_model"}


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
        grouping = {k: v for k, v in sorted(record.config.items()) if k not in NOT_GROUPING}
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


def write_analysis_summaries(records: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    """analysis_scalars.csv and analysis_aggregate.csv in `out_dir` when any analysis run is among
    `records`; the paths written."""
    scalars = summary_scalars(records)
    if scalars.empty:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    scalars.to_csv(out_dir / SCALARS_FILE, index=False)
    aggregate_scalars(scalars).to_csv(out_dir / AGGREGATE_FILE, index=False)
    return [out_dir / SCALARS_FILE, out_dir / AGGREGATE_FILE]
