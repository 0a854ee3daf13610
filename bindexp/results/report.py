"""The comparison's files and W&B run: what `scripts/compare.py` writes under --out, and the same
tables and plots logged back as a run (job_type compare)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bindexp.io.folder import (
    AGGREGATE_FILE,
    AGGREGATE_MD_FILE,
    ANALYSIS_AGGREGATE_FILE,
    HEATMAP_FILE,
    LEFT_OUT_FILE,
    PATCH_CELLS_FILE,
    PATCH_DIR,
    SCALARS_FILE,
    TIDY_FILE,
    TRAIN_AGGREGATE_FILE,
    TRAIN_RUNS_FILE,
    TRAINING_COMPARE_PLOT_FILE,
)
from bindexp.io.grids import write_grid as write_grid_files
from bindexp.io.tables import write_csv, write_figure, write_text
from bindexp.plots.accuracy import aggregate_figures
from bindexp.plots.training import plot_training_bands
from bindexp.results.grids import AveragedGrid, grid_cells
from bindexp.results.records import RunRecord
from bindexp.results.tables import DEFAULT_BY, aggregate, aggregate_scalars, markdown_table, plot_table, summary_scalars
from bindexp.results.training import aggregate_training, history_bands, train_runs_table


def write_left_out(left_out: Sequence[tuple[RunRecord, str]], out_dir: Path) -> Path:
    return write_csv(pd.DataFrame([{"run_id": r.run_id, "run_name": r.name, "group": r.group, "reason": why}
                                   for r, why in left_out], columns=["run_id", "run_name", "group", "reason"]),
                     out_dir / LEFT_OUT_FILE)


def write_tables(tidy: pd.DataFrame, table: pd.DataFrame, by: Sequence[str], out_dir: Path) -> list[Path]:
    """tidy.csv, aggregate.csv, aggregate.md and the accuracy plots (accuracy_by_model.png, _by_hops.png)."""
    files = [write_csv(tidy, out_dir / TIDY_FILE), write_csv(table, out_dir / AGGREGATE_FILE),
             write_text(markdown_table(table, by), out_dir / AGGREGATE_MD_FILE)]
    for panel, figure in aggregate_figures(plot_table(aggregate(tidy, DEFAULT_BY))).items():
        files.append(write_figure(figure, out_dir / f"accuracy_by_{panel}.png", dpi=110))
    return files


def write_grid(averaged: AveragedGrid, folder: Path) -> list[Path]:
    """The averaged grid in the runs' own format (<folder>/<key>/grid.safetensors + grid.json, which
    `Grid.load` reads) and a heatmap of its first metric."""
    target = folder / averaged.name
    arrays_path, sidecar_path = write_grid_files(averaged.grid, target, {**averaged.key, "runs": averaged.run_ids})
    metric = averaged.grid.metrics[0]
    figure = averaged.grid.plot(metric, title=f"{averaged.name}: mean of {len(averaged.run_ids)} runs")
    return [arrays_path, sidecar_path, write_figure(figure, target / HEATMAP_FILE, dpi=110)]


def write_grids(grids: Sequence[AveragedGrid], out_dir: Path) -> list[Path]:
    """Every averaged grid under patch/ and their cells in patch_cells.csv."""
    files = [path for averaged in grids for path in write_grid(averaged, out_dir / PATCH_DIR)]
    cells = pd.concat([grid_cells(g) for g in grids], ignore_index=True)
    return files + [write_csv(cells, out_dir / PATCH_CELLS_FILE)]


def write_analysis_summaries(records: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    """analysis_scalars.csv and analysis_aggregate.csv in `out_dir` when any analysis run is among
    `records`; the paths written."""
    scalars = summary_scalars(records)
    if scalars.empty:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_csv(scalars, out_dir / SCALARS_FILE), write_csv(aggregate_scalars(scalars), out_dir / ANALYSIS_AGGREGATE_FILE)]


def write_training(records: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    """train_runs.csv (one row per training run), train_aggregate.csv (over seeds) and
    training_by_hops.png (validation accuracy by hops and heuristic-wrong against the step, mean
    over seeds with the band between the lowest and highest run) when any training run is among
    `records`; the paths written."""
    runs = train_runs_table(records)
    if runs.empty:
        return []
    files = [write_csv(runs, out_dir / TRAIN_RUNS_FILE), write_csv(aggregate_training(records), out_dir / TRAIN_AGGREGATE_FILE)]
    bands = history_bands(records)
    if bands:
        figure = plot_training_bands(bands, f"validation accuracy over training ({len(runs)} training runs)")
        files.append(write_figure(figure, out_dir / TRAINING_COMPARE_PLOT_FILE, dpi=110))
    return files


def log_to_wandb(settings: Any, outcome: Any) -> None:
    """The comparison's tables, plots and files as a W&B run (job_type compare)."""
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
        if not outcome.training.empty:
            tracker.log_table("train_runs", outcome.training.astype(object).where(outcome.training.notna(), None))
        tracker.set_summary({"runs": int(outcome.tidy["run_id"].nunique()) if not outcome.tidy.empty else 0,
                             "patch_groups": len(outcome.grids), "training_runs": len(outcome.training)})
        tracker.log_artifact("compare", [p for p in outcome.files if p.is_file()], settings.model_dump(mode="json"))
