"""The compare job: runs gathered, tabulated, aggregated over seeds, and patch grids averaged.

    python scripts/compare.py --group=smoke-cpu                      # offline runs on this disk
    python scripts/compare.py --source=api --sweep=abc123 --entity=me  # a W&B server

After gathering (`bindexp.results.gather`) everything is one code path: `tables` (the tidy table,
its aggregate over seeds, the analysis runs' numbers), `grids` (averaged patch grids) and
`report` (the files under --out, and with --log_wandb the same as a W&B run). One list of
bookkeeping keys (`records.BOOKKEEPING`) says which config entries never split runs.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bindexp.errors import InputError
from bindexp.io.folder import LEFT_OUT_FILE, check_writable_dir
from bindexp.jobs.registry import ANALYSIS_JOB_TYPES
from bindexp.results.gather import gather, select_runs, versions_apart
from bindexp.results.grids import AveragedGrid, average_grids
from bindexp.results.records import RunFilter, RunRecord
from bindexp.results.report import (
    log_to_wandb,
    write_analysis_summaries,
    write_grids,
    write_left_out,
    write_tables,
    write_training,
)
from bindexp.results.tables import DEFAULT_BY, aggregate, differing_settings, summary_scalars, tidy_table
from bindexp.results.training import TRAIN_JOB, train_runs_table
from bindexp.runs.naming import check_run_name
from bindexp.runs.settings import StrList
from bindexp.vocab import WandbMode

COMPARED_JOB_TYPES = (None, "eval", "patch", TRAIN_JOB, *ANALYSIS_JOB_TYPES)  # None: runs older than config.json


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
    job_type: str | None = Field(None, description="only runs of this job type (eval, patch, train, an analysis)")
    per_page: int = Field(100, ge=1, description="api: runs per request")
    by: StrList = Field(DEFAULT_BY, description="columns the aggregate table groups by")
    out: str | None = Field(None, description="output folder (default outputs/compare/<sweep|group|...>)")
    log_wandb: bool = Field(False, description="log the tables and plots back as a W&B run (job_type compare)")
    wandb_mode: WandbMode | None = Field(None, description="for --log_wandb: None means online with a key")
    run_name: str | None = None
    mix_versions: bool = Field(False, description="average runs of different bindexp versions together "
                                                  "(default: grouped apart)")

    @field_validator("by")
    @classmethod
    def _some_columns(cls, by: list[str]) -> list[str]:
        if not by:
            raise ValueError(f"needs at least one column, e.g. --by=[{', '.join(DEFAULT_BY)}]")
        return by

    @field_validator("run_name")
    @classmethod
    def _run_name_is_a_name(cls, name: str | None) -> str | None:
        return check_run_name(name)

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        label = self.sweep or self.group or "-".join(self.tags) or self.job_type or "all"
        return Path("outputs") / "compare" / re.sub(r"[^A-Za-z0-9_.-]+", "_", label)

    def where(self) -> RunFilter:
        return RunFilter(self.sweep, self.group, tuple(self.tags), self.job_type)


@dataclasses.dataclass
class CompareOutcome:
    tidy: pd.DataFrame
    aggregate: pd.DataFrame
    grids: list[AveragedGrid]
    skipped: list[tuple[RunRecord, str]]
    out_dir: Path
    files: list[Path]
    training: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # one row per training run


def run_compare(settings: CompareSettings, records: Sequence[RunRecord] | None = None) -> CompareOutcome:
    """Gather (unless `records` are given), tabulate, aggregate, write, and optionally log to W&B.
    Every run gathered and not used is listed in left_out.csv with the reason; nothing to compare
    at all is an InputError."""
    out_dir = settings.out_dir
    check_writable_dir(out_dir, "out")
    gathered = list(records) if records is not None else gather(
        settings.source, settings.where(), runs_dir=settings.runs_dir, entity=settings.entity, project=settings.project,
        per_page=settings.per_page, cache_dir=settings.out_dir / "downloads")
    versions = versions_apart(gathered, settings.mix_versions)
    if len(versions) > 1:
        print(f"note: the runs come from bindexp versions {', '.join(versions)}: "
              + ("averaged together (--mix_versions=True)" if settings.mix_versions
                 else "grouped apart (--mix_versions=True averages them together)"), file=sys.stderr)
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
    grids, warnings = average_grids(good)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    scalars = summary_scalars(good)
    training = train_runs_table(good)
    used = (set(tidy["run_id"]) | {i for g in grids for i in g.run_ids} | set(scalars["run_id"])
            | (set(training["run_id"]) if not training.empty else set()))
    unused = [(record, unused_reason(record)) for record in good if record.run_id not in used]
    for record, why in unused:
        print(f"left out run {record.run_id} ({record.name or '-'}): {why}", file=sys.stderr)
    skipped = skipped + unused
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [write_left_out(skipped, out_dir)] if skipped else []
    if not used:
        raise InputError(f"nothing to compare: none of the {len(gathered)} runs gathered has results compare "
                         f"reads; why each was left out: {out_dir / LEFT_OUT_FILE}")
    if not tidy.empty:
        files += write_tables(tidy, table, settings.by, out_dir)
    if grids:
        files += write_grids(grids, out_dir)
    files += write_analysis_summaries(good, out_dir)  # attention, lens, subspace, locate runs
    files += write_training(good, out_dir)  # train runs
    outcome = CompareOutcome(tidy, table, grids, skipped, out_dir, files, training)
    if settings.log_wandb:
        log_to_wandb(settings, outcome)
    return outcome


def unused_reason(record: RunRecord) -> str:
    """Why a finished run gave compare nothing to read."""
    job = record.job_type
    if job not in COMPARED_JOB_TYPES:
        return (f"job type {job!r} is not compared (compare reads {', '.join(j for j in COMPARED_JOB_TYPES if j)} "
                "runs)")
    if job in (None, "eval"):
        return "its summary has no accuracy"
    if job == "patch":
        return "it has no grid files (grid.safetensors + grid.json)"
    if job == "train":
        return "its summary has no final metrics (with their intervals and n)"
    return "its summary has no numbers"
