"""The eval job: accuracy of a model on generated programs, as one W&B run (job_type `eval`).

    settings = EvalSettings(model="tiny-random-llama", hops=[1, 2], num_programs=50)
    outcome = run_eval(settings)        # logs, writes results.jsonl + summary.json
    outcome.results                     # one row per program
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from bindexp.io.streams import append_lines
from bindexp.io.tables import write_figure
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.models.loading import LoadedModel, check_model_name
from bindexp.models.scoring import Score
from bindexp.plots.accuracy import accuracy_figure, accuracy_table, value_text
from bindexp.runs.conditions import Condition, check_prompt_lengths, eval_conditions, score_condition
from bindexp.runs.settings import ConditionsGroup, RunSettings
from bindexp.runs.tracking import Tracker, check_run_folder
from bindexp.stats import wilson_interval


class EvalSettings(ConditionsGroup, RunSettings):
    """`scripts/eval.py`: accuracy of a model on generated programs."""


@dataclasses.dataclass
class EvalOutcome:
    results: pd.DataFrame
    summary: dict[str, Any]
    out_dir: Path
    run_dir: Path | None


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
            append_lines(results_path, cell)
    return pd.DataFrame(rows)


def eval_summary(results: pd.DataFrame) -> dict[str, Any]:
    """Overall accuracy plus accuracy by hops, by seq_len and by heuristic label."""
    correct, n = int(results["correct"].sum()), len(results)
    low, high = wilson_interval(correct, n)
    summary: dict[str, Any] = {
        "accuracy": correct / n if n else float("nan"),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "n_programs": n,
    }
    for by in ("hops", "seq_len", "heuristic"):
        if by in results and results[by].notna().any():
            table = accuracy_table(results, [by])
            summary[f"by_{by}"] = {
                value_text(row[by]): {k: row[k] for k in ("accuracy", "ci_low", "ci_high", "n")}
                for row in table.to_dict("records")
            }
    return summary


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
    conditions = eval_conditions(settings)  # impossible task requests fail here, before any model or W&B work
    check_run_folder(settings)
    lm = cache.get(settings.model, **settings.model_kwargs())
    check_prompt_lengths(lm, conditions, settings)  # before any forward or W&B run
    with Tracker(settings, "eval") as tracker:
        tracker.update_config({"model_info": lm.describe()})
        folder = tracker.folder
        folder.results.unlink(missing_ok=True)
        results = evaluate(lm, settings, folder.results)
        summary = eval_summary(results)
        log_eval_history(tracker, results, summary)
        tracker.write_summary(summary)
        plot_path = write_figure(accuracy_figure(results, title=lm.name, task=settings.task, shots=settings.n_shots),
                                 folder.accuracy_plot, dpi=120)
        tracker.log_table("programs", results)
        for by in ("hops", "seq_len", "heuristic"):
            if results[by].notna().any():
                tracker.log_table(f"accuracy_by_{by}", accuracy_table(results, [by]))
        tracker.log_image("accuracy_plot", plot_path)
        tracker.log_artifact("eval-results", [folder.results, folder.summary])
        return EvalOutcome(results, summary, tracker.out_dir, tracker.run_dir)
