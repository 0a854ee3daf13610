"""The patching runner: one grid (exact, AtP or knockout) over many pairs, as one W&B run.

    outcome = run_patch(PatchSettings(model="smollm2-135m", hops=2, site="resid_pre"))
    outcome.grid.to_frame(); outcome.grid.plot()
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bindexp.interventions.attribution import attribution_grid, compare_cells, spearman, top_cells
from bindexp.interventions.grid import Grid
from bindexp.interventions.grids import patch_grid, role_columns
from bindexp.interventions.knockout import knockout_grid
from bindexp.interventions.pairs import pair_prompts
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.models.loading import LoadedModel, ModelError, check_model_name
from bindexp.models.scoring import score_candidates
from bindexp.runs.settings import PatchSettings
from bindexp.runs.tracking import Tracker
from bindexp.runs.robust import load_robust_programs, with_file_prompt_settings
from bindexp.tasks.counterfactuals import CounterfactualPair, make_counterfactual, make_pairs
from bindexp.tasks.program import Program, TaskError, derive_rng
from bindexp.tasks.prompts import get_template
from bindexp.tasks.registry import DIGITS, make_programs

PAIRS_FILE = "pairs.jsonl"
MAX_DRAW_FACTOR = 64  # with only_correct, look at up to this many candidate pairs per pair wanted
HEATMAP_FILE = "heatmap.png"
HEADLINE_METRIC = {"exact": "normalized_effect", "atp": "normalized_effect", "knockout": "p_drop"}
CONTROL_METRIC = "p_original_change"  # distractor_value pairs share their answer: LD cannot move


@dataclasses.dataclass
class PatchOutcome:
    grid: Grid
    summary: dict[str, Any]
    pairs: list[CounterfactualPair]
    out_dir: Path
    run_dir: Path | None


def patch_shots(settings: PatchSettings) -> list[Program]:
    options = {**settings.task_options(), "hops": settings.hops}
    return make_programs("binding", settings.n_shots, settings.seq_len, settings.seed, stream="shots", **options)


def candidate_pairs(settings: PatchSettings, n: int, shots: list[Program]) -> list[CounterfactualPair]:
    """Seeded pairs passing the model-free filters (the sanity gate; systematic programs).
    With `programs_file`, the originals are that file's programs, in order (at most n pairs)."""
    keep = (lambda p: not p.original.meta["heuristic"]) if settings.systematic_only else None
    if settings.programs_file is None:
        options = {**settings.task_options(), "hops": settings.hops}
        return make_pairs(settings.counterfactual, n, settings.seq_len, settings.seed,
                          exclude={s.text for s in shots}, keep=keep, **options)
    programs = load_robust_programs(settings.programs_file, hops=settings.hops, seq_len=settings.seq_len)
    shot_texts = {shot.text for shot in shots}
    programs = [program for program in programs if program.text not in shot_texts]
    pairs = []
    for index, program in enumerate(programs):
        rng = derive_rng("counterfactual", settings.counterfactual, settings.seed, "file", index)
        pair = make_counterfactual(program, settings.counterfactual, rng)
        if pair is not None and (keep is None or keep(pair)):
            pairs.append(pair)
    if not pairs:
        raise TaskError(f"{settings.programs_file} has no usable program at hops={settings.hops}, "
                        f"seq_len={settings.seq_len} for {settings.counterfactual} counterfactuals")
    return pairs[:n]


def _key(pair: CounterfactualPair) -> tuple[str, str]:
    return pair.original.text, pair.counterfactual.text


def select_pairs(lm: LoadedModel, settings: PatchSettings, shots: list[Program]) -> tuple[list[CounterfactualPair], int]:
    """`num_programs` pairs; with only_correct, those the model answers right on both sides.
    Returns the pairs and how many candidates were looked at."""
    wanted = settings.num_programs
    if not settings.only_correct:
        return candidate_pairs(settings, wanted, shots), wanted
    drawn = 2 * wanted
    both_right: dict[tuple[str, str], bool] = {}  # pairs already scored are not scored again
    while True:
        pairs = candidate_pairs(settings, drawn, shots)
        new = [pair for pair in pairs if _key(pair) not in both_right]
        prompts = [prompt for pair in new for prompt in pair_prompts(pair, shots, settings.template)]
        answers = [answer for pair in new for answer in pair.answers]
        scores = score_candidates(lm, prompts, answers, DIGITS, batch_size=settings.batch_size)
        both_right.update({_key(pair): scores[2 * k].correct and scores[2 * k + 1].correct
                           for k, pair in enumerate(new)})
        kept = [pair for pair in pairs if both_right[_key(pair)]]
        exhausted = settings.programs_file is not None and len(pairs) < drawn
        if len(kept) >= wanted or drawn >= MAX_DRAW_FACTOR * wanted or exhausted:
            if not kept:
                raise ModelError(f"the model answers none of {drawn} pairs correctly on both sides; "
                                 "use only_correct=False or an easier setting")
            if len(kept) < wanted:
                print(f"warning: only {len(kept)} of {drawn} pairs are answered correctly on both sides; "
                      f"patching those instead of {wanted}", file=sys.stderr)
            return kept[:wanted], drawn
        drawn *= 2


def compute_grid(lm: LoadedModel, settings: PatchSettings, pairs, shots, out_dir: Path) -> tuple[Grid, dict]:
    columns = "roles" if settings.positions == "roles" else "positions"
    extra: dict[str, Any] = {}
    common = dict(shots=shots, template=settings.template, progress=settings.progress)
    if settings.method == "knockout":
        sources = [c for c in role_columns(settings.hops) if c != "final"]
        grid = knockout_grid(lm, pairs, sources=sources, destination=settings.knockout_destination,
                             window=settings.knockout_window, layers=settings.layers,
                             cells_per_forward=settings.batch_size, **common)
    elif settings.method == "atp":
        grid = attribution_grid(lm, pairs, site=settings.site, columns=columns, layers=settings.layers, **common)
        if settings.verify_top_k:
            cells = top_cells(grid, settings.verify_top_k)
            exact = patch_grid(lm, pairs, site=settings.site, columns=columns, layers=sorted({c[0] for c in cells}),
                               only=set(cells), cells_per_forward=settings.batch_size, **common)
            table = compare_cells(grid, exact, cells)
            extra = {"verify_table": table, "atp_exact_spearman_top_k": spearman(table["atp"].to_numpy(),
                                                                                   table["exact"].to_numpy())}
    else:
        grid = patch_grid(lm, pairs, site=settings.site, columns=columns, layers=settings.layers,
                          cells_per_forward=settings.batch_size, pairs_per_chunk=settings.pairs_per_chunk,
                          stream_path=out_dir / PAIRS_FILE, **common)
    return grid, extra


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def grid_summary(grid: Grid, metric: str) -> dict[str, Any]:
    """Best layer per column, and where the effect passes from the root constant to the final token."""
    values = grid.mean[metric]
    if values.ndim == 3:
        values = np.nanmax(values, axis=2)
    layers, columns = grid.labels["layer"], grid.labels[grid.axes[1]]
    best = {}
    for ci, column in enumerate(columns):
        if np.isfinite(values[:, ci]).any():
            li = int(np.nanargmax(values[:, ci]))
            best[str(column)] = {"layer": layers[li], metric: float(values[li, ci])}
    summary: dict[str, Any] = {"metric": metric, "best_layer_by_column": best,
                               "n_pairs": int(grid.n.max()) if grid.n.size else 0}
    if "root_value" in columns and "final" in columns:
        root, final = values[:, columns.index("root_value")], values[:, columns.index("final")]
        crossing = [layers[i] for i in range(len(layers)) if final[i] > root[i]]
        summary["handoff_layer"] = crossing[0] if crossing else None
    return summary


def check_layers(settings: PatchSettings, n_layers: int) -> None:
    bad = [layer for layer in settings.layers or [] if not 0 <= layer < n_layers]
    if bad or settings.layers == []:
        raise ModelError(f"layers must lie in 0..{n_layers - 1}, got {settings.layers}")
    if settings.method == "knockout" and settings.knockout_window > n_layers:
        raise ModelError(f"knockout_window {settings.knockout_window} exceeds the model's {n_layers} layers")


def run_patch(settings: PatchSettings, cache: ModelCache = MODEL_CACHE) -> PatchOutcome:
    """One patching run (job_type `patch`), with a local copy of everything."""
    check_model_name(settings.model)
    settings = with_file_prompt_settings(settings)  # the file's shots, template, seed unless given
    get_template(settings.template)
    shots = patch_shots(settings)  # impossible requests fail here, before any model or W&B work
    candidate_pairs(settings, 1, shots)
    lm = cache.get(settings.model, **settings.model_kwargs())
    check_layers(settings, lm.n_layers)  # before any W&B run or pair is made
    with Tracker(settings, "patch") as tracker:
        tracker.update_config({"model_info": lm.describe()})
        (tracker.out_dir / PAIRS_FILE).unlink(missing_ok=True)
        pairs, looked_at = select_pairs(lm, settings, shots)
        grid, extra = compute_grid(lm, settings, pairs, shots, tracker.out_dir)
        metadata = settings.model_dump(mode="json")
        arrays_path, sidecar_path = grid.save(tracker.out_dir, metadata)
        metric = HEADLINE_METRIC[settings.method]
        if settings.counterfactual == "distractor_value" and settings.method == "exact":
            metric = CONTROL_METRIC
        heatmap = tracker.out_dir / HEATMAP_FILE
        figure = grid.plot(metric, title=f"{lm.name} {settings.method} {settings.site if settings.method != 'knockout' else ''}"
                           f" hops={settings.hops} ({len(pairs)} pairs)")
        figure.savefig(heatmap, dpi=120)
        _close(figure)
        summary = {**grid_summary(grid, metric), "pairs_looked_at": looked_at, "pairs_used": len(pairs),
                   "pairs_dropped": len(grid.info.get("dropped", []))}
        if "atp_exact_spearman_top_k" in extra:
            value = extra["atp_exact_spearman_top_k"]
            summary["atp_exact_spearman_top_k"] = None if math.isnan(value) else value
            extra["verify_table"].to_csv(tracker.out_dir / "atp_verify.csv", index=False)
            tracker.log_table("atp_verify", extra["verify_table"])
        tracker.write_json("summary.json", summary)
        tracker.set_summary(summary)
        tracker.log_table("grid", grid.to_frame())
        tracker.log_image("heatmap", heatmap)
        files = [arrays_path, sidecar_path] + ([tracker.out_dir / PAIRS_FILE] if (tracker.out_dir / PAIRS_FILE).exists() else [])
        tracker.log_artifact("patch-grid", files, metadata)
        return PatchOutcome(grid, summary, pairs, tracker.out_dir, tracker.run_dir)
