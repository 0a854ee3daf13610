"""Accuracy during training on the fixed evaluation sets, and the phases it passes through.

Scoring is `bindexp.models.scoring.score_candidates` (argmax over the ten digits at the final
token), exactly as `scripts/eval.py` scores a model. Metric names (W&B history keys):

    validation/loss, validation/accuracy, validation/accuracy_hops{h},
    validation/accuracy_heuristic_right, validation/accuracy_heuristic_wrong (the "systematic" programs),
    heldout/accuracy, longer_len{L}/accuracy, more_hops{h}/accuracy   (and test/... at the end)

Phases (after the paper): the heuristic plateau is the share of validation programs whose answer
is the constant on line 1 or line 2 -- the best a model relying on that heuristic alone can reach.
`heuristic_step` is the first evaluation where the model uses the heuristic: its accuracy on
heuristic-right programs is above its accuracy on heuristic-wrong ones by their 95% Wilson
intervals (the lower bound of one above the upper bound of the other; the group sizes are the
history's `validation/n_heuristic_right` and `_wrong`). `past_heuristic_step` is the first
evaluation whose accuracy exceeds the plateau by its 95% Wilson interval (the lower bound above the
plateau, so sampling noise around the plateau does not count); `systematic_step` the first whose
heuristic-wrong accuracy passes 0.99. None when not reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from bindexp.models.loading import LoadedModel
from bindexp.models.scoring import score_candidates
from bindexp.stats import wilson_interval
from bindexp.tasks.program import Program
from bindexp.vocab import DIGITS, PHASE_KEYS, STEP_KEY

SYSTEMATIC_THRESHOLD = 0.99
END_SETS = ("test", "systematic")  # scored once, at the end of training
DETAILED_SETS = ("validation", "test", "systematic")  # with loss, hops and heuristic groups


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def set_metrics(lm: LoadedModel, name: str, programs: Sequence[Program], batch_size: int,
                detailed: bool, intervals: bool = False) -> dict[str, float | int]:
    """Accuracy (and, if `detailed`, loss, accuracy by hops and by heuristic label) on one set;
    with `intervals`, each accuracy's 95% Wilson bounds (`<key>_ci_low`, `<key>_ci_high`) and its
    number of programs (`<key>_n`)."""
    scores = score_candidates(lm, [p.text for p in programs], [p.answer for p in programs], DIGITS,
                              batch_size=batch_size, reuse_prefix=False)
    groups = {f"{name}/accuracy": [s.correct for s in scores]}
    metrics: dict[str, float] = {}
    if detailed:
        metrics[f"{name}/loss"] = _mean([-math.log(max(s.p_answer, 1e-30)) for s in scores])
        for hops in sorted({p.meta["hops"] for p in programs}):
            groups[f"{name}/accuracy_hops{hops}"] = [s.correct for s, p in zip(scores, programs) if p.meta["hops"] == hops]
        for label, wanted in (("right", True), ("wrong", False)):
            groups[f"{name}/accuracy_heuristic_{label}"] = [
                s.correct for s, p in zip(scores, programs) if p.meta["heuristic"] == wanted]
            metrics[f"{name}/n_heuristic_{label}"] = len(groups[f"{name}/accuracy_heuristic_{label}"])
    for key, correct in groups.items():
        if not correct:  # a set with no program of this group (the systematic set has no heuristic-right ones)
            continue
        metrics[key] = _mean(correct)
        if intervals:
            metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = wilson_interval(sum(correct), len(correct))
            metrics[f"{key}_n"] = len(correct)
    return metrics


def evaluate_sets(model: Any, tokenizer: Any, eval_sets: dict[str, list[Program]], batch_size: int,
                  names: Sequence[str] | None = None, intervals: bool = False) -> dict[str, float]:
    """Metrics of `model` on the named sets (default: all but the END_SETS), in eval mode, leaving the
    global RNG state exactly as it was (so evaluating never changes training); `intervals`: see
    `set_metrics`."""
    lm = LoadedModel("training", model, tokenizer, "in-training", model.config.model_type)
    chosen = [n for n in eval_sets if n not in END_SETS] if names is None else list(names)
    was_training = model.training
    model.eval()
    devices = [next(model.parameters()).device] if next(model.parameters()).is_cuda else []
    try:
        with torch.random.fork_rng(devices=devices):
            metrics: dict[str, float] = {}
            for name in chosen:
                detailed = name in DETAILED_SETS
                metrics.update(set_metrics(lm, name, eval_sets[name], batch_size, detailed, intervals))
    finally:
        model.train(was_training)
    return metrics


def heuristic_plateau(programs: Sequence[Program]) -> float:
    """Share of `programs` the line-1/line-2 heuristic can answer."""
    return _mean([bool(p.meta["heuristic"]) for p in programs])


def phase_boundaries(history: Sequence[dict[str, Any]], plateau: float) -> dict[str, int | None]:
    """First evaluation steps (`PHASE_KEYS`) where the heuristic is used, where accuracy passes the
    heuristic plateau, and where systematic accuracy passes 0.99."""

    def first(condition) -> int | None:
        return next((int(row[STEP_KEY]) for row in history if condition(row)), None)

    steps = {
        "heuristic_step": first(uses_heuristic),
        "past_heuristic_step": first(lambda r: past_heuristic(r, plateau)),
        "systematic_step": first(is_systematic),
    }
    return {key: steps[key] for key in PHASE_KEYS}


def is_systematic(row: dict[str, Any]) -> bool:
    """Validation accuracy on heuristic-wrong programs above SYSTEMATIC_THRESHOLD."""
    return row.get("validation/accuracy_heuristic_wrong", 0.0) > SYSTEMATIC_THRESHOLD


def _hits_and_n(row: dict[str, Any], key: str, n_keys: Sequence[str]) -> tuple[int, int] | None:
    """(correct, n) behind the accuracy `row[key]`, n summed over `n_keys`; None if any is missing."""
    if key not in row or not all(k in row for k in n_keys):
        return None
    n = sum(int(row[k]) for k in n_keys)
    return (round(row[key] * n), n) if n else None


def past_heuristic(row: dict[str, Any], plateau: float) -> bool:
    """Validation accuracy above `plateau` by its 95% Wilson interval (its lower bound above it);
    False when the row lacks the accuracy or the group sizes."""
    counts = _hits_and_n(row, "validation/accuracy", [f"validation/n_heuristic_{g}" for g in ("right", "wrong")])
    return counts is not None and wilson_interval(*counts)[0] > plateau


def uses_heuristic(row: dict[str, Any]) -> bool:
    """Accuracy on heuristic-right programs above accuracy on heuristic-wrong ones by their 95%
    Wilson intervals (False when the row lacks the accuracies or the group sizes)."""
    right, wrong = (_hits_and_n(row, f"validation/accuracy_heuristic_{g}", [f"validation/n_heuristic_{g}"])
                    for g in ("right", "wrong"))
    if right is None or wrong is None:
        return False
    return wilson_interval(*right)[0] > wilson_interval(*wrong)[1]
