"""Compare runs: a tidy table of accuracy, aggregated over seeds, plus averaged patching grids.

    python scripts/compare.py --group=smoke-cpu                      # offline runs on this disk
    python scripts/compare.py --source=api --sweep=abc123 --entity=me  # a W&B server

After gathering (`bindexp.results.records`: the W&B API or local run folders, same RunRecord shape)
everything is one code path: runs that cannot be read (a cut results.jsonl, a broken summary) and
duplicates (same settings and seed: the newest is kept) are left out with their reason;
`tidy_table` (one row per run x hops x seq_len, from each run's results.jsonl, else its summary,
with every setting of the run as a column), `aggregate` (mean over seeds with a 95% Student-t
interval, and the pooled Wilson interval; runs that differ in any setting besides the seed are
never averaged together: such settings join the grouping), CSV + markdown + plots, and
`average_grids` for patch runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bindexp.errors import InputError
from bindexp.results.summaries import write_analysis_summaries
from bindexp.results.records import RunFilter, RunRecord, api_records, local_records
from bindexp.runs.cli import check_writable_folder
from bindexp.io.folder import GRID_ARRAYS, GRID_SIDECAR, HEATMAP_FILE, RESULTS_FILE, SUMMARY_FILE
from bindexp.runs.plots import new_figure, plot_accuracy
from bindexp.runs.settings import StrList
from bindexp.vocab import WandbMode
from bindexp.stats import INTERVAL_NOTE, mean_interval, wilson_interval

DEFAULT_BY = ["model", "hops", "seq_len"]
RUN_COLUMNS = ["run_id", "run_name", "group", "sweep"]
CONFIG_COLUMNS = ["model", "task", "seed", "shots", "template", "systematic_only"]
CELL_COLUMNS = ["hops", "seq_len", "n", "correct", "accuracy", "ci_low", "ci_high"]
GRID_KEY = ["model", "hops", "site", "method", "counterfactual"]
# config entries that may differ between runs averaged together (seeds, bookkeeping, W&B, speed)
NOT_GRID_SETTINGS = {"seed", "run_name", "group", "tags", "output_dir", "progress", "wandb_mode", "project",
                     "entity", "batch_size", "pairs_per_chunk", "model_info", "device", "runs", "sweep", "provenance",
                     "inputs", "hops_label", "hops_max", "hops_min", "seq_len_label", "seq_len_max", "seq_len_min"}
NOT_A_SETTING = NOT_GRID_SETTINGS - {"seed"}  # bookkeeping, W&B and speed: never a column, never splits runs
CELL_SETTINGS = {"hops", "seq_len"}  # a run's cells carry these
LEFT_OUT_FILE = "left_out.csv"


class CompareSettings(BaseSettings):
    """`scripts/compare.py`: gather runs, tabulate and aggregate them."""

    model_config = SettingsConfigDict(
        env_prefix="BINDEXP_", cli_parse_none_str="None", cli_exit_on_error=False, extra="forbid"
    )

    source: Literal["local", "api"] = Field("local", description="local run folders, or the W&B API (a server)")
    runs_dir: str | None = Field(None, description="local: folder of runs (default $WANDB_DIR/wandb, else ./wandb)")
    entity: str | None = Field(None, description="api: W&B entity (default: your default entity)")
    project: str = "bindexp"
    sweep: str | None = Field(None, description="only runs of this sweep id")
    group: str | None = Field(None, description="only runs of this group (a local sweep's name)")
    tags: StrList = Field([], description="only runs with any of these tags")
    job_type: str | None = Field(None, description="only eval or patch runs")
    per_page: int = Field(100, ge=1, description="api: runs per request")
    by: StrList = Field(DEFAULT_BY, description="columns the aggregate table groups by")
    out: str | None = Field(None, description="output folder (default outputs/compare/<sweep|group|...>)")
    log_wandb: bool = Field(False, description="log the tables and plots back as a W&B run (job_type compare)")
    wandb_mode: WandbMode | None = Field(None, description="for --log_wandb: None means online with a key")
    run_name: str | None = None

    @field_validator("by")
    @classmethod
    def _some_columns(cls, by: list[str]) -> list[str]:
        if not by:
            raise ValueError(f"needs at least one column, e.g. --by=[{', '.join(DEFAULT_BY)}]")
        return by

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        label = self.sweep or self.group or "-".join(self.tags) or self.job_type or "all"
        return Path("outputs") / "compare" / re.sub(r"[^A-Za-z0-9_.-]+", "_", label)

    def where(self) -> RunFilter:
        return RunFilter(self.sweep, self.group, tuple(self.tags), self.job_type)


@dataclasses.dataclass
class AveragedGrid:
    key: dict[str, Any]  # model, hops, site, method, counterfactual
    grid: Any  # bindexp.interventions.results.grid.Grid: per cell, the mean over runs with its 95% interval
    run_ids: list[str]
    name: str  # folder name: the key's values (+ "-layout2" ... when one key has grids of several layouts)


@dataclasses.dataclass
class CompareOutcome:
    tidy: pd.DataFrame
    aggregate: pd.DataFrame
    grids: list[AveragedGrid]
    skipped: list[tuple[RunRecord, str]]
    out_dir: Path
    files: list[Path]


# ---------------------------------------------------------------- gathering


def gather(settings: CompareSettings) -> list[RunRecord]:
    """Every run the settings select, from the chosen source."""
    if settings.source == "api":
        require_wandb_key()
        path = f"{settings.entity}/{settings.project}" if settings.entity else settings.project
        return api_records(path, settings.where(), per_page=settings.per_page,
                           cache_dir=settings.out_dir / "downloads")
    runs_dir = Path(settings.runs_dir) if settings.runs_dir else default_runs_dir()
    if not runs_dir.is_dir():
        raise InputError(f"no runs folder {runs_dir} (set --runs_dir or WANDB_DIR)")
    return local_records(runs_dir, settings.where())


def require_wandb_key() -> None:
    """Raise InputError when no W&B API key is configured (WANDB_API_KEY or a netrc entry)."""
    if os.environ.get("WANDB_API_KEY", "").strip() or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth

        host = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
        if read_netrc_auth(host=host):
            return
    except Exception:  # noqa: BLE001 - cannot tell: let the API answer
        return
    raise InputError("--source=api needs a W&B API key (set WANDB_API_KEY or run `wandb login`); "
                     "for runs on this disk use --source=local")


def default_runs_dir() -> Path:
    import os

    return Path(os.environ.get("WANDB_DIR") or ".") / "wandb"


# ---------------------------------------------------------------- eval runs


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
    reserved = NOT_A_SETTING | CELL_SETTINGS | set(CONFIG_COLUMNS) | set(RUN_COLUMNS) | set(CELL_COLUMNS)
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
        cells = [_text(row[c]) for c in by] + [str(row["runs"]), str(row["n"]), f"{row['accuracy']:.3f}",
                                               _interval(row["ci_low"], row["ci_high"]),
                                               f"{row['pooled_accuracy']:.3f}",
                                               _interval(row["pooled_ci_low"], row["pooled_ci_high"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nIntervals: {INTERVAL_NOTE}.\n"


def _text(value: Any) -> str:
    return "–" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _interval(low: float, high: float) -> str:
    return "–" if low is None or math.isnan(low) else f"[{low:.3f}, {high:.3f}]"


def accuracy_plots(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Accuracy against seq_len: one panel per model (a line per hops), one panel per hops (a line per model).
    A group of one run has no interval over runs; it shows its pooled (Wilson) interval."""
    table = table.assign(ci_low=table["ci_low"].where(table["ci_low"].notna(), table["pooled_ci_low"]),
                         ci_high=table["ci_high"].where(table["ci_high"].notna(), table["pooled_ci_high"]))
    paths = []
    for panel, line in (("model", "hops"), ("hops", "model")):
        panels = list(pd.unique(table[panel]))
        if not panels:
            continue
        figure = new_figure(4 * len(panels), 3.3)
        axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)
        for ax, value in zip(axes[0], panels):
            part = table[_equal(table[panel], value)]
            plot_accuracy(ax, part, "seq_len", line)
            ax.set(title=f"{panel}={_text(value)}", ylabel="")
            ax.set_xticks(sorted(float(v) for v in part["seq_len"].dropna().unique()))
        axes[0][0].set_ylabel("accuracy (mean over runs, 95% CI)")
        figure.tight_layout()
        path = out_dir / f"accuracy_by_{panel}.png"
        figure.savefig(path, dpi=110)
        paths.append(path)
    return paths


def plot_table(table: pd.DataFrame) -> pd.DataFrame:
    """The aggregate for `accuracy_plots`: settings that differ besides model x hops x seq_len are
    folded into the hops label (`1 (shots=0)`), so each line still means one setting."""
    extra = [c for c in table.columns[:list(table.columns).index("runs")] if c not in DEFAULT_BY]
    if not extra:
        return table
    labels = [f"{_text(h)} ({', '.join(f'{c}={_text(row[c])}' for c in extra)})"
              for h, (_, row) in zip(table["hops"], table.iterrows())]
    return table.assign(hops=labels)


def _equal(column: pd.Series, value: Any) -> pd.Series:
    return column.isna() if value is None or (not isinstance(value, str) and pd.isna(value)) else column == value


# ---------------------------------------------------------------- patch runs


def load_grid(record: RunRecord) -> Any:
    """A patch run's grid (grid.safetensors + grid.json, downloaded first for API runs), or None."""
    from bindexp.interventions.results.grid import Grid

    sidecar, arrays = record.file(GRID_SIDECAR), record.file(GRID_ARRAYS)
    if sidecar is None or arrays is None or sidecar.parent != arrays.parent:
        return None
    return Grid.load(sidecar.parent)


def _signature(grid: Any) -> str:
    shapes = {metric: list(values.shape) for metric, values in sorted(grid.mean.items())}
    return json.dumps([list(grid.axes), grid.labels, shapes], sort_keys=True, default=str)


def average_grids(records: Sequence[RunRecord]) -> tuple[list[AveragedGrid], list[str]]:
    """Per model x hops (x site, method, counterfactual): each metric's mean over runs, cell by cell,
    with its 95% Student-t interval over runs (the runs' means streamed through a `GridAccumulator`); a cell
    missing (nan) in a run is averaged over the runs that have it. Only grids whose axes, labels and
    shapes match are averaged together; others form their own set, with a warning. Returns
    (averages, warnings)."""
    from bindexp.interventions.results.grid import GridAccumulator

    groups: dict[tuple[str, str], list[tuple[RunRecord, Any]]] = {}
    for record in records:
        if record.job_type not in (None, "patch"):
            continue
        grid = load_grid(record)
        if grid is None:
            continue
        # runs are averaged as seeds only when every other setting is the same
        key = {k: v for k, v in record.config.items() if k not in NOT_GRID_SETTINGS}
        key = {**{k: record.config.get(k) for k in GRID_KEY}, **key}
        groups.setdefault((json.dumps(key, sort_keys=True, default=str), _signature(grid)), []).append((record, grid))
    sets_per_key: dict[str, int] = {}
    for key_json, _ in groups:
        sets_per_key[key_json] = sets_per_key.get(key_json, 0) + 1
    warnings = [f"grids of {k} differ in axes, labels or shape: averaged in {n} separate sets"
                for k, n in sets_per_key.items() if n > 1]
    averaged, seen, named = [], {}, {}
    for (key_json, _), members in sorted(groups.items()):
        first = members[0][1]
        accumulator = GridAccumulator(first.axes, first.labels, first.metrics)
        for _, member in members:
            accumulator.add(member.mean)
        run_ids = [r.run_id for r, _ in members]
        grid = accumulator.grid({"runs": run_ids, "n_is": "runs per cell"})
        grid.n = np.max(np.stack(list(grid.counts.values())), axis=0)  # runs with any metric in the cell
        loaded = json.loads(key_json)
        key = {k: loaded[k] for k in GRID_KEY}
        seen[key_json] = seen.get(key_json, 0) + 1
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(str(v) for v in key.values()))
        if named.setdefault(name, key_json) != key_json:  # same headline settings, others differ
            name += "-" + hashlib.sha1(key_json.encode()).hexdigest()[:6]
        name += f"-layout{seen[key_json]}" if sets_per_key[key_json] > 1 else ""
        averaged.append(AveragedGrid(key, grid, run_ids, name))
    return averaged, warnings


def grid_cells(averaged: AveragedGrid) -> pd.DataFrame:
    """The averaged grid in long format (one row per cell: labels, runs, mean and interval per metric)."""
    frame = averaged.grid.to_frame().rename(columns={"n": "runs"})
    return frame.assign(**averaged.key)[[*averaged.key, *frame.columns]]


def write_grid(averaged: AveragedGrid, folder: Path) -> list[Path]:
    """The averaged grid in the runs' own format (<folder>/<key>/grid.safetensors + grid.json, which
    `Grid.load` reads) and a heatmap of its first metric."""
    target = folder / averaged.name
    arrays_path, sidecar_path = averaged.grid.save(target, {**averaged.key, "runs": averaged.run_ids})
    metric = averaged.grid.metrics[0]
    figure = averaged.grid.plot(metric, title=f"{averaged.name}: mean of {len(averaged.run_ids)} runs")
    figure.savefig(target / HEATMAP_FILE, dpi=110)
    return [arrays_path, sidecar_path, target / HEATMAP_FILE]


# ---------------------------------------------------------------- which runs count


def broken_summary(record: RunRecord) -> str | None:
    """Why the run's summary.json on this disk cannot be read, else None."""
    summary = record.local_file(SUMMARY_FILE)
    try:
        if summary is not None:
            json.loads(summary.read_text())
    except (OSError, ValueError):
        return f"{SUMMARY_FILE} is not valid JSON (truncated?)"
    return None


def broken_files(record: RunRecord) -> str | None:
    """Why a run's results cannot be read (a cut results.jsonl, a broken grid), else None."""
    try:
        if record.job_type in (None, "eval") and "accuracy" in record.summary:
            cells = run_cells(record)
            if cells.empty or (cells["n"] <= 0).any():
                return f"{RESULTS_FILE} has no results"
        if record.job_type == "patch" and record.file(GRID_SIDECAR) is not None:
            load_grid(record)
    except Exception as err:  # noqa: BLE001 - any unreadable file leaves the run out, never the comparison
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        return f"files unreadable (truncated?): {first}"
    return None


def finished_at(record: RunRecord) -> float:
    """When the run finished: its W&B summary's _timestamp, else its files' modification time, else 0."""
    stamp = record.summary.get("_timestamp")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        return float(stamp)
    for name in (SUMMARY_FILE, RESULTS_FILE, GRID_SIDECAR):
        path = record.local_file(name)
        if path is not None:
            return path.stat().st_mtime
    return 0.0


def run_identity(record: RunRecord) -> str | None:
    """What makes two runs the same measurement: job type, every setting but bookkeeping, and the seed.
    None when the run's config has no seed (nothing to compare)."""
    if "seed" not in record.config:
        return None
    settings = {k: v for k, v in record.config.items() if k not in NOT_A_SETTING and not k.startswith("_")}
    return json.dumps([record.job_type, settings], sort_keys=True, default=str)


def drop_duplicates(records: Sequence[RunRecord]) -> tuple[list[RunRecord], list[tuple[RunRecord, str]]]:
    """(runs kept, [(run, why)]): of runs with the same settings and seed, only the newest counts."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        identity = run_identity(record)
        if identity is not None:
            groups.setdefault(identity, []).append(record)
    dropped = {}
    for group in groups.values():
        newest = max(group, key=lambda r: (finished_at(r), r.run_id))
        for record in group:
            if record is not newest:
                dropped[id(record)] = (record, f"duplicate of run {newest.run_id} (same settings and seed; "
                                               f"the newest is kept)")
    return [r for r in records if id(r) not in dropped], list(dropped.values())


def select_runs(records: Sequence[RunRecord]) -> tuple[list[RunRecord], list[tuple[RunRecord, str]], int]:
    """(runs to compare, [(run, why it is left out)], how many of those are duplicates): failed or
    unfinished runs, runs whose files cannot be read, and older duplicates are left out."""
    good, left_out = [], []
    for record in records:
        why = broken_summary(record) or record.problem or broken_files(record)
        if why is None:
            good.append(record)
        else:
            left_out.append((record, why))
    kept, duplicates = drop_duplicates(good)
    return kept, left_out + duplicates, len(duplicates)


def write_left_out(left_out: Sequence[tuple[RunRecord, str]], out_dir: Path) -> Path:
    path = out_dir / LEFT_OUT_FILE
    pd.DataFrame([{"run_id": r.run_id, "run_name": r.name, "group": r.group, "reason": why} for r, why in left_out],
                 columns=["run_id", "run_name", "group", "reason"]).to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- the runner


def run_compare(settings: CompareSettings, records: Sequence[RunRecord] | None = None) -> CompareOutcome:
    """Gather (unless `records` are given), tabulate, aggregate, write, and optionally log to W&B."""
    out_dir = settings.out_dir
    check_writable_folder(out_dir, "--out")
    gathered = list(records) if records is not None else gather(settings)
    good, skipped, n_duplicates = select_runs(gathered)
    for record, why in skipped[:len(skipped) - n_duplicates]:
        print(f"skipped run {record.run_id} ({record.name or '-'}): {why}", file=sys.stderr)
    if n_duplicates:
        pairs = "; ".join(f"{r.run_id} ({why.split(' (')[0]})" for r, why in skipped[-n_duplicates:])
        print(f"warning: {n_duplicates} duplicate runs left out (same settings and seed as a newer run): {pairs}",
              file=sys.stderr)
    if not good:
        raise InputError(f"no finished runs matched ({len(gathered)} gathered, {len(skipped)} left out)")
    tidy = tidy_table(good)
    table = aggregate(tidy, settings.by)  # (an unknown --by column fails here, before anything is written)
    extra = differing_settings(tidy, settings.by)
    if extra:
        print(f"note: runs differ in {', '.join(extra)} besides the seed: grouped by "
              f"{'it' if len(extra) == 1 else 'them'} too (only seeds are averaged)", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [write_left_out(skipped, out_dir)] if skipped else []
    if not tidy.empty:
        tidy.to_csv(out_dir / "tidy.csv", index=False)
        table.to_csv(out_dir / "aggregate.csv", index=False)
        (out_dir / "aggregate.md").write_text(markdown_table(table, settings.by))
        files += [out_dir / "tidy.csv", out_dir / "aggregate.csv", out_dir / "aggregate.md"]
        files += accuracy_plots(plot_table(aggregate(tidy, DEFAULT_BY)), out_dir)
    grids, warnings = average_grids(good)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if grids:
        for averaged in grids:
            files += write_grid(averaged, out_dir / "patch")
        pd.concat([grid_cells(g) for g in grids], ignore_index=True).to_csv(out_dir / "patch_cells.csv", index=False)
        files.append(out_dir / "patch_cells.csv")
    files += write_analysis_summaries(good, out_dir)  # attention, lens, subspace, locate runs
    outcome = CompareOutcome(tidy, table, grids, skipped, out_dir, files)
    if settings.log_wandb:
        _log_to_wandb(settings, outcome)
    return outcome


def _log_to_wandb(settings: CompareSettings, outcome: CompareOutcome) -> None:
    from bindexp.runs.tracking import Destination, Tracker

    destination = Destination(settings.wandb_mode, settings.project, settings.entity, settings.group,
                              tuple(settings.tags), settings.run_name, str(settings.out_dir))
    with Tracker(settings, "compare", destination=destination) as tracker:
        if not outcome.tidy.empty:
            tracker.log_table("tidy", outcome.tidy.astype(object).where(outcome.tidy.notna(), None))
            tracker.log_table("aggregate", outcome.aggregate.astype(object).where(outcome.aggregate.notna(), None))
        if outcome.grids:
            cells = pd.concat([grid_cells(g) for g in outcome.grids], ignore_index=True)
            if len(cells) <= 200_000:
                tracker.log_table("patch_cells", cells.astype(object).where(cells.notna(), None))
        for path in outcome.files:
            if path.suffix == ".png":
                tracker.log_image(path.stem, path)
        tracker.set_summary({"runs": int(outcome.tidy["run_id"].nunique()) if not outcome.tidy.empty else 0,
                             "patch_groups": len(outcome.grids)})
        tracker.log_artifact("compare", [p for p in outcome.files if p.is_file()], settings.model_dump(mode="json"))
