"""The patching runner: one grid (any method of `bindexp.interventions.methods`) over many pairs, as one W&B run.

    outcome = run_patch(PatchSettings(model="smollm2-135m", hops=2, site="resid_pre"))
    outcome.grid.to_frame(); outcome.grid.plot()
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from bindexp.interventions.grid import Grid
from bindexp.interventions.methods import METHODS, MethodOptions, MethodResult
from bindexp.interventions.plan import plan_grid
from bindexp.interventions.selection import select_pairs
from bindexp.interventions.summary import grid_summary
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.models.loading import LoadedModel, ModelError, check_model_name
from bindexp.runs.folder import ATP_VERIFY_FILE, HEATMAP_FILE, PAIRS_FILE
from bindexp.runs.settings import PatchSettings
from bindexp.runs.tracking import Tracker
from bindexp.runs.robust import load_robust_programs, with_file_prompt_settings
from bindexp.tasks.counterfactuals import CounterfactualPair, check_pair_request, make_counterfactual, make_pairs
from bindexp.tasks.program import Program, TaskError, derive_rng
from bindexp.tasks.prompts import require_answer_next
from bindexp.tasks.registry import get_task, make_programs

CONTROL_METRIC = "p_original_change"  # pairs that share their answer: LD cannot move


@dataclasses.dataclass
class PatchOutcome:
    grid: Grid
    summary: dict[str, Any]
    pairs: list[CounterfactualPair]
    out_dir: Path
    run_dir: Path | None


def draw_options(settings: PatchSettings) -> dict[str, Any]:
    """The task's options for drawing programs, with the condition axes the task has (e.g. hops)."""
    axes = get_task(settings.task).axes
    return {**settings.task_options(), **({"hops": settings.hops} if "hops" in axes else {})}


def patch_shots(settings: PatchSettings) -> list[Program]:
    return make_programs(settings.task, settings.n_shots, settings.seq_len, settings.seed, stream="shots",
                         **draw_options(settings))


def candidate_pairs(settings: PatchSettings, n: int, shots: list[Program]) -> list[CounterfactualPair]:
    """Seeded pairs passing the model-free filters (the sanity gate; systematic programs).
    With `programs_file`, the originals are that file's programs, in order (at most n pairs)."""
    keep = (lambda p: not p.original.meta.get("heuristic")) if settings.systematic_only else None
    options = draw_options(settings)
    if settings.programs_file is None:
        return make_pairs(settings.counterfactual, n, settings.seq_len, settings.seed, task=settings.task,
                          exclude={s.text for s in shots}, keep=keep, **options)
    check_pair_request(settings.task, settings.counterfactual, options)
    programs = load_robust_programs(settings.programs_file, hops=options.get("hops"), seq_len=settings.seq_len)
    shot_texts = {shot.text for shot in shots}
    programs = [program for program in programs if program.text not in shot_texts and program.task == settings.task]
    pairs = []
    for index, program in enumerate(programs):
        rng = derive_rng("counterfactual", settings.counterfactual, settings.seed, "file", index)
        pair = make_counterfactual(program, settings.counterfactual, rng)
        if pair is not None and (keep is None or keep(pair)):
            pairs.append(pair)
    if not pairs:
        where = ", ".join(f"{k}={v}" for k, v in (("hops", options.get("hops")), ("seq_len", settings.seq_len))
                          if v is not None)
        raise TaskError(f"{settings.programs_file} has no usable program at {where} "
                        f"for {settings.counterfactual} counterfactuals")
    return pairs[:n]


def choose_pairs(lm: LoadedModel, settings: PatchSettings, shots: list[Program]) -> tuple[list[CounterfactualPair], int]:
    """`num_programs` pairs; with only_correct, those the model answers right on both sides.
    Returns the pairs and how many candidates were looked at."""
    if not settings.only_correct:
        return candidate_pairs(settings, settings.num_programs, shots), settings.num_programs
    return select_pairs(lm, lambda n: candidate_pairs(settings, n, shots), settings.num_programs, shots=shots,
                        template=settings.template, batch_size=settings.batch_size,
                        finite=settings.programs_file is not None, progress=settings.progress)


def compute_grid(lm: LoadedModel, settings: PatchSettings, pairs, shots, out_dir: Path) -> MethodResult:
    """The settings' method on a plan of these pairs."""
    method = METHODS[settings.method]
    plan = plan_grid(lm, pairs, site=settings.site, shots=shots, template=settings.template,
                     columns="roles" if settings.positions == "roles" else "positions", layers=settings.layers,
                     prefix_until=method.prefix_until)
    options = MethodOptions(cells_per_forward=settings.batch_size, pairs_per_chunk=settings.pairs_per_chunk,
                            stream_path=out_dir / PAIRS_FILE, progress=settings.progress,
                            verify_top_k=settings.verify_top_k, knockout_destination=settings.knockout_destination,
                            knockout_window=settings.knockout_window)
    return method.load()(plan, options)


def headline_metric(settings: PatchSettings, grid: Grid) -> str:
    """The method's headline metric, or the control metric for pairs whose answer must not change."""
    kind = get_task(settings.task).counterfactual(settings.counterfactual)
    if not kind.changes_answer and CONTROL_METRIC in grid.metrics:
        return CONTROL_METRIC
    return METHODS[settings.method].headline


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def check_layers(settings: PatchSettings, n_layers: int) -> None:
    bad = [layer for layer in settings.layers or [] if not 0 <= layer < n_layers]
    if bad or settings.layers == []:
        raise ModelError(f"layers must lie in 0..{n_layers - 1}, got {settings.layers}")
    if settings.method == "knockout" and settings.knockout_window > n_layers:
        raise ModelError(f"knockout_window {settings.knockout_window} exceeds the model's {n_layers} layers")


def heatmap_title(settings: PatchSettings, model: str, n_pairs: int) -> str:
    """`model method [site] on task (axes): n counterfactual pairs` (knockout writes no site)."""
    site = f" {settings.site}" if settings.method != "knockout" else f" to {settings.knockout_destination}"
    axes = ", ".join(f"{axis}={getattr(settings, axis)}" for axis in get_task(settings.task).axes)
    return f"{model} {settings.method}{site} on {settings.task} ({axes}): {n_pairs} {settings.counterfactual} pairs"


MAX_HISTORY_COLUMNS = 200  # W&B keys per layer step at most (positions=all on long prompts)


def log_patch_history(tracker: Tracker, grid: Grid, metric: str) -> None:
    """The headline metric per layer as history: step `layer`, one key per column
    (`<metric>/<role or pos N>`, heads averaged), so W&B's default line charts show the effect of
    each role across layers."""
    import numpy as np

    values = grid.mean[metric]
    if values.ndim == 3:
        values = np.nanmean(values, axis=2)
    columns = grid.labels[grid.axes[1]][:MAX_HISTORY_COLUMNS]
    names = [str(c) if grid.axes[1] == "role" else f"pos{c}" for c in columns]
    rows = [{"layer": int(layer), **{name: float(values[i, j]) for j, name in enumerate(names)
                                     if np.isfinite(values[i, j])}}
            for i, layer in enumerate(grid.labels["layer"])]
    tracker.log_steps("layer", rows, metric)


def run_patch(settings: PatchSettings, cache: ModelCache = MODEL_CACHE) -> PatchOutcome:
    """One patching run (job_type `patch`), with a local copy of everything."""
    check_model_name(settings.model)
    settings = with_file_prompt_settings(settings)  # the file's shots, template, seed unless given
    require_answer_next(settings.template)  # also refuses unknown templates
    shots = patch_shots(settings)  # impossible requests fail here, before any model or W&B work
    candidate_pairs(settings, 1, shots)
    lm = cache.get(settings.model, **settings.model_kwargs())
    check_layers(settings, lm.n_layers)  # before any W&B run or pair is made
    with Tracker(settings, "patch") as tracker:
        tracker.update_config({"model_info": lm.describe()})
        (tracker.out_dir / PAIRS_FILE).unlink(missing_ok=True)
        pairs, looked_at = choose_pairs(lm, settings, shots)
        result = compute_grid(lm, settings, pairs, shots, tracker.out_dir)
        grid = result.grid
        metadata = settings.model_dump(mode="json")
        arrays_path, sidecar_path = grid.save(tracker.out_dir, metadata)
        metric = headline_metric(settings, grid)
        heatmap = tracker.out_dir / HEATMAP_FILE
        figure = grid.plot(metric, title=heatmap_title(settings, lm.name, len(pairs)))
        figure.savefig(heatmap, dpi=120)
        _close(figure)
        summary = {**grid_summary(grid, metric, get_task(settings.task).value_role), "pairs_looked_at": looked_at,
                   "pairs_used": len(pairs), "pairs_dropped": len(grid.info.get("dropped", []))}
        if result.verification is not None:
            value = result.verification.spearman
            summary["atp_exact_spearman_top_k"] = None if math.isnan(value) else value
            result.verification.table.to_csv(tracker.out_dir / ATP_VERIFY_FILE, index=False)
            tracker.log_table("atp_verify", result.verification.table)
        tracker.log_headline(summary)  # its numbers as a history step too (default panels, sweep charts)
        tracker.write_summary(summary)
        log_patch_history(tracker, grid, metric)
        tracker.log_table("grid", grid.to_frame())
        tracker.log_image("heatmap", heatmap)
        files = [arrays_path, sidecar_path] + ([tracker.out_dir / PAIRS_FILE] if (tracker.out_dir / PAIRS_FILE).exists() else [])
        tracker.log_artifact("patch-grid", files, detail=settings.site if settings.method != "knockout" else "knockout")
        return PatchOutcome(grid, summary, pairs, tracker.out_dir, tracker.run_dir)
