"""The patching runner: one grid (any method of `bindexp.interventions.methods`) over many pairs, as one W&B run.

    outcome = run_patch(PatchSettings(model="smollm2-135m", hops=2, site="resid_pre"))
    outcome.grid.to_frame(); outcome.grid.plot()
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from bindexp.interventions.results.grid import Grid
from bindexp.interventions.methods import METHODS, MethodOptions, MethodResult
from bindexp.interventions.engine.plan import plan_grid
from bindexp.interventions.engine.selection import select_pairs
from bindexp.interventions.methods.exact import attach_metric
from bindexp.interventions.methods.noise import noise_floor
from bindexp.interventions.results.summary import grid_summary, worst_cell
from bindexp.vocab import NOISE_FLOOR
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.models.loading import LoadedModel, ModelError, check_model_name
from bindexp.io.folder import ATP_VERIFY_FILE, HEATMAP_FILE, PAIRS_FILE, check_writable_dir
from bindexp.runs.settings import PatchSettings
from bindexp.runs.tracking import Tracker
from bindexp.runs.robust import load_robust_programs, with_file_prompt_settings
from bindexp.tasks.counterfactuals import CounterfactualPair, check_pair_request, make_counterfactual, make_pairs
from bindexp.tasks.program import Program, TaskError, derive_rng
from bindexp.tasks.prompts import require_answer_next
from bindexp.tasks.registry import get_task, make_programs

CONTROL_METRIC = "flip"  # pairs that share their answer: the share of predictions leaving it (the flip rate)


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


MIN_GAP_METHODS = ("exact", "atp")  # the methods whose headline is normalized by the gap


def effective_min_gap(settings: PatchSettings) -> float:
    """min_gap for methods normalized by the gap; 0 for controls (their two answers are one token:
    the gap is 0 by design) and for the other methods."""
    if settings.method not in MIN_GAP_METHODS or is_control(settings):
        return 0.0
    return settings.min_gap


def compute_grid(lm: LoadedModel, settings: PatchSettings, pairs, shots, out_dir: Path) -> MethodResult:
    """The settings' method on a plan of these pairs; exact grids get their `noise_floor` metric."""
    method = METHODS[settings.method]
    plan = plan_grid(lm, pairs, site=settings.site, shots=shots, template=settings.template,
                     columns="roles" if settings.positions == "roles" else "positions", layers=settings.layers,
                     prefix_until=method.prefix_until)
    min_gap = effective_min_gap(settings)
    options = MethodOptions(cells_per_forward=settings.batch_size, pairs_per_chunk=settings.pairs_per_chunk,
                            stream_path=out_dir / PAIRS_FILE, progress=settings.progress,
                            verify_top_k=settings.verify_top_k, verify_full=settings.verify == "full",
                            min_gap=min_gap, knockout_destination=settings.knockout_destination,
                            knockout_window=settings.knockout_window)
    result = method.load()(plan, options)
    if is_control(settings):  # both answers are one token: IIA would be accuracy on the original answer
        for table in (result.grid.mean, result.grid.ci_low, result.grid.ci_high, result.grid.counts):
            table.pop("iia", None)
    excluded = set(result.grid.info.get("excluded_pairs", []))
    labels = [t.pair.original.meta["heuristic"] for i, t in enumerate(plan.tokenized)
              if i not in excluded and "heuristic" in t.pair.original.meta]
    if labels:  # tasks with the line-1/line-2 heuristic: its share of the pairs actually patched
        result.grid.info["heuristic_share"] = sum(map(bool, labels)) / len(labels)
    if result.grid.info.get("excluded_small_gap") and not result.grid.n.any():
        raise ModelError(f"every pair's clean-to-counterfactual logit gap is below min_gap={min_gap}; "
                         "lower --min_gap (0 keeps every pair)")
    if settings.method == "exact" and settings.noise_floor_pairs:
        floor, cost = noise_floor(plan, settings.noise_floor_pairs, cells_per_forward=settings.batch_size,
                                  min_gap=min_gap, metric=headline_metric(settings, result.grid))
        attach_metric(result.grid, NOISE_FLOOR, floor)
        result.grid.info["noise_floor"] = {**cost, "definition": NOISE_FLOOR_DEFINITION}
    return result


NOISE_FLOOR_DEFINITION = ("per cell, max |headline metric| over the first noise_floor_pairs pairs of the same cells "
                          "patched with the clean run's own values (same code path and dtype)")


def headline_metric(settings: PatchSettings, grid: Grid) -> str:
    """The method's headline metric, or the control metric for pairs whose answer must not change."""
    if is_control(settings) and CONTROL_METRIC in grid.metrics:
        return CONTROL_METRIC
    return METHODS[settings.method].headline


def is_control(settings: PatchSettings) -> bool:
    """A counterfactual whose answer must not change."""
    return not get_task(settings.task).counterfactual(settings.counterfactual).changes_answer


def run_summary(settings: PatchSettings, result: MethodResult, metric: str, pairs: list[CounterfactualPair],
                looked_at: int, dtype: str) -> dict[str, Any]:
    """Everything a patch run's summary says (README: "What the summaries mean")."""
    grid, spec = result.grid, get_task(settings.task)
    kind = spec.counterfactual(settings.counterfactual)
    if is_control(settings) and metric == CONTROL_METRIC:
        summary = {**grid_summary(grid, metric, key="flip_rate_by_column"), "flip_rate_worst_cell": worst_cell(grid, metric)}
    else:
        summary = grid_summary(grid, metric, spec.value_role, handoff=kind.edits_value_role)
    summary.update({"pairs_looked_at": looked_at, "pairs_used": len(pairs), "pairs_dropped": len(grid.info.get("dropped", [])),
                    "pairs_excluded_min_gap": int(grid.info.get("excluded_small_gap", 0)), "min_gap": effective_min_gap(settings),
                    "dtype": dtype})
    if "heuristic_share" in grid.info:
        summary["heuristic_share"] = grid.info["heuristic_share"]
    if "noise_floor" in grid.info:
        summary["noise_floor_pairs"] = grid.info["noise_floor"]["pairs"]
        summary["noise_floor_patched_cells"] = grid.info["noise_floor"]["patched_cells"]
        summary["patched_cells"] = grid.info.get("patched_cells")
    if result.verification is not None:
        for name, value in result.verification.agreement.items():
            summary[name if name == "k" else f"atp_{name}"] = None if isinstance(value, float) and math.isnan(value) else value
        summary["atp_verify_k"] = summary.pop("k")
    return summary


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


def checked_request(settings: PatchSettings) -> tuple[PatchSettings, list[Program]]:
    """What a patch run refuses before any model loads: the settings in effect (a programs file's
    prompt settings filled in) and the shots."""
    check_model_name(settings.model)
    settings = with_file_prompt_settings(settings)  # the file's shots, template, seed unless given
    require_answer_next(settings.template)  # also refuses unknown templates
    shots = patch_shots(settings)  # impossible requests fail here, before any model or W&B work
    candidate_pairs(settings, 1, shots)
    check_writable_dir(settings.output_dir)
    return settings, shots


def run_patch(settings: PatchSettings, cache: ModelCache = MODEL_CACHE) -> PatchOutcome:
    """One patching run (job_type `patch`), with a local copy of everything."""
    settings, shots = checked_request(settings)
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
        summary = run_summary(settings, result, metric, pairs, looked_at, str(lm.dtype).removeprefix("torch."))
        if result.verification is not None:
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
