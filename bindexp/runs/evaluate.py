"""The evaluation runner: accuracy of a model on generated programs, as one W&B run.

    settings = EvalSettings(model="tiny-random-llama", hops=[1, 2], num_programs=50)
    outcome = run_eval(settings)        # logs, writes results.jsonl + summary.json
    outcome.results                     # one row per program
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import pandas as pd

from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.models.loading import LoadedModel, ModelError, check_model_name
from bindexp.models.scoring import Score, candidate_token_ids, score_candidates, score_generate
from bindexp.io.folder import check_writable_dir
from bindexp.runs.plots import save_accuracy_plot
from bindexp.runs.reporting import accuracy_table, eval_summary
from bindexp.runs.settings import EvalSettings
from bindexp.runs.tracking import Tracker
from bindexp.tasks.program import Program, TaskError
from bindexp.tasks.prompts import build_prompt, render_chat, template_spec
from bindexp.tasks.registry import get_task, make_programs


@dataclasses.dataclass
class Condition:
    """Programs of one (hops, seq_len) cell, with the few-shot examples they are shown."""

    hops: int | None
    seq_len: int
    shots: list[Program]
    programs: list[Program]


@dataclasses.dataclass
class EvalOutcome:
    results: pd.DataFrame
    summary: dict[str, Any]
    out_dir: Path
    run_dir: Path | None


def eval_conditions(settings: EvalSettings) -> list[Condition]:
    """Every program the run will score; pure Python and deterministic in the settings."""
    spec = get_task(settings.task)
    if settings.scoring == "candidates" and not template_spec(settings.template).answer_next:
        raise TaskError(f"template {settings.template!r} has the model reason before answering; "
                        "use scoring=generate or auto")
    options = settings.task_options()
    hops_axis: list[int | None] = list(settings.hops) if "hops" in spec.axes else [None]
    conditions = []
    for hops, seq_len in itertools.product(hops_axis, settings.seq_len):
        cell_options = {**options, "hops": hops} if hops is not None else options
        shots = make_programs(spec.name, settings.n_shots, seq_len, settings.seed, stream="shots", **cell_options)
        programs = _draw(settings, seq_len, {s.text for s in shots}, cell_options)
        conditions.append(Condition(hops, seq_len, shots, programs))
    return conditions


def _draw(settings: EvalSettings, seq_len: int, exclude: set[str], options: dict[str, Any]) -> list[Program]:
    wanted, n = settings.num_programs, settings.num_programs
    hops = options.get("hops")
    if settings.systematic_only and hops is not None and seq_len - hops + 1 <= 2:
        # the root constant comes before the chain's other hops - 1 lines, so it sits on line 1 or 2
        raise TaskError(f"systematic_only=True keeps no program at seq_len={seq_len}, hops={hops}: the chain's "
                        "constant is always on line 1 or 2, so the line-1/line-2 heuristic always answers right; "
                        "use seq_len >= hops + 2")
    while True:
        drawn = make_programs(settings.task, n, seq_len, settings.seed, exclude=exclude, **options)
        kept = [p for p in drawn if not (settings.systematic_only and p.meta.get("heuristic"))]
        if len(kept) >= wanted or n > 64 * wanted:
            if not kept:
                raise TaskError(f"systematic_only=True kept none of {len(drawn)} programs at seq_len={seq_len}"
                                + (f", hops={hops}" if hops is not None else ""))
            return kept[:wanted]
        n *= 2


def score_condition(lm: LoadedModel, condition: Condition, settings: EvalSettings) -> list[Score]:
    spec = get_task(settings.task)
    prompts = [build_prompt(p, condition.shots, settings.template) for p in condition.programs]
    if settings.chat:
        prompts = [render_chat(lm.tokenizer, prompt) for prompt in prompts]
    answers = [p.answer for p in condition.programs]
    common = dict(batch_size=settings.batch_size, progress=settings.progress)
    template = template_spec(settings.template)
    if template.answer_next and _use_candidates(lm, spec.candidates, prompts[0], settings.scoring):
        return score_candidates(lm, prompts, answers, spec.candidates, **common)
    budget = max(settings.max_new_tokens, template.max_new_tokens)
    return score_generate(lm, prompts, answers, spec.answer_type, max_new_tokens=budget, parse=template.parse,
                          **common)


def _use_candidates(lm: LoadedModel, candidates: tuple[str, ...] | None, prompt: str, scoring: str) -> bool:
    if scoring == "generate":
        return False
    if candidates is None:
        if scoring == "candidates":
            raise ModelError("this task has open-ended answers; use scoring=generate or auto")
        return False
    if scoring == "auto":
        try:
            candidate_token_ids(lm.tokenizer, prompt, candidates)
        except ModelError:
            return False
    return True


def result_rows(lm: LoadedModel, condition: Condition, scores: list[Score], settings: EvalSettings) -> list[dict]:
    rows = []
    for index, (program, score) in enumerate(zip(condition.programs, scores)):
        meta = program.meta
        rows.append({
            "model": lm.name,
            "task": program.task,
            "hops": condition.hops,
            "seq_len": condition.seq_len,
            "seed": settings.seed,
            "index": index,
            "shots": settings.n_shots,
            "program": program.text,
            "answer": program.answer_text,
            "prediction": score.prediction,
            "correct": score.correct,
            "margin": score.margin,
            "p_answer": score.p_answer,
            "heuristic": meta.get("heuristic"),
            "heuristic_line1": meta.get("heuristic_line1"),
            "heuristic_line2": meta.get("heuristic_line2"),
        })
    return rows


def evaluate(lm: LoadedModel, settings: EvalSettings, results_path: Path | None = None) -> pd.DataFrame:
    """Score every condition; rows are appended to `results_path` as each condition finishes."""
    rows: list[dict] = []
    for condition in eval_conditions(settings):
        cell = result_rows(lm, condition, score_condition(lm, condition, settings), settings)
        rows.extend(cell)
        if results_path is not None:
            with open(results_path, "a") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in cell)
    return pd.DataFrame(rows)


def log_eval_history(tracker: Tracker, results: pd.DataFrame, summary: dict[str, Any]) -> None:
    """History W&B's default panels can plot: accuracy per hops (step `hops`, keys `by_hops/...`)
    and per seq_len (step `seq_len`, keys `by_seq_len/...`), then the headline numbers."""
    for axis in ("hops", "seq_len"):
        if results[axis].notna().any():
            rows = accuracy_table(results, [axis]).to_dict("records")
            tracker.log_steps(axis, [{**row, axis: int(row[axis])} for row in rows], f"by_{axis}")
    tracker.log_headline({key: summary[key] for key in ("accuracy", "accuracy_ci_low", "accuracy_ci_high",
                                                        "n_programs")})


def run_eval(settings: EvalSettings, cache: ModelCache = MODEL_CACHE) -> EvalOutcome:
    """One evaluation as one W&B run (job_type `eval`), with a local copy of everything."""
    check_model_name(settings.model)
    eval_conditions(settings)  # impossible task requests fail here, before any model or W&B work
    check_writable_dir(settings.output_dir)
    with Tracker(settings, "eval") as tracker:
        lm = cache.get(settings.model, **settings.model_kwargs())
        tracker.update_config({"model_info": lm.describe()})
        folder = tracker.folder
        folder.results.unlink(missing_ok=True)
        results = evaluate(lm, settings, folder.results)
        summary = eval_summary(results)
        log_eval_history(tracker, results, summary)
        tracker.write_summary(summary)
        plot_path = save_accuracy_plot(results, folder.accuracy_plot, title=lm.name, task=settings.task,
                                       shots=settings.n_shots)
        tracker.log_table("programs", results)
        for by in ("hops", "seq_len", "heuristic"):
            if results[by].notna().any():
                tracker.log_table(f"accuracy_by_{by}", accuracy_table(results, [by]))
        tracker.log_image("accuracy_plot", plot_path)
        tracker.log_artifact("eval-results", [folder.results, folder.summary])
        return EvalOutcome(results, summary, tracker.out_dir, tracker.run_dir)
