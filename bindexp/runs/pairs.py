"""The pairs a patch run or an analysis works on, drawn below the runners so each draws them the
same way: seeded candidates passing the model-free filters (the task's sanity gate, its systematic
filter), or a programs file's programs (from `scripts/find_robust.py`, every line checked), then --
with only_correct -- the pairs the model answers right on both sides. Also what such a run refuses
before any model loads.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypeVar

from bindexp.errors import ModelError, TaskError
from bindexp.interventions.engine.plan import pair_prompts
from bindexp.interventions.engine.selection import select_pairs
from bindexp.models.loading import LoadedModel, check_model_name
from bindexp.runs.settings import PairSettings, ProgramGroup
from bindexp.runs.tracking import check_run_folder
from bindexp.tasks.counterfactuals import CounterfactualPair, check_pair_request, make_counterfactual, make_pairs
from bindexp.tasks.program import Program, derive_rng
from bindexp.tasks.programs_file import read_programs_file
from bindexp.tasks.prompts import require_answer_next
from bindexp.tasks.registry import get_task, make_programs


def draw_options(settings: PairSettings) -> dict[str, Any]:
    """The task's options for drawing programs, with the condition axes the task has (e.g. hops)."""
    axes = get_task(settings.task).axes
    return {**settings.task_options(), **({"hops": settings.hops} if "hops" in axes else {})}


def patch_shots(settings: PairSettings) -> list[Program]:
    return make_programs(settings.task, settings.n_shots, settings.seq_len, settings.seed, stream="shots",
                         **draw_options(settings))


def candidate_pairs(settings: PairSettings, n: int, shots: list[Program]) -> list[CounterfactualPair]:
    """Seeded pairs passing the model-free filters (the sanity gate; systematic programs).
    With `programs_file`, the originals are that file's programs, in order (at most n pairs)."""
    spec = get_task(settings.task)
    keep = (lambda p: spec.systematic(p.original)) if settings.systematic_only else None
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


def choose_pairs(lm: LoadedModel, settings: PairSettings, shots: list[Program]) -> tuple[list[CounterfactualPair], int]:
    """`num_programs` pairs; with only_correct, those the model answers right on both sides.
    Returns the pairs and how many candidates were looked at."""
    if not settings.only_correct:
        return candidate_pairs(settings, settings.num_programs, shots), settings.num_programs
    return select_pairs(lm, lambda n: candidate_pairs(settings, n, shots), settings.num_programs, shots=shots,
                        template=settings.template, batch_size=settings.batch_size,
                        finite=settings.programs_file is not None, progress=settings.progress)


def load_robust_programs(path: str | Path, *, hops: int | None = None, seq_len: int | None = None) -> list[Program]:
    """The file's programs as `Program` objects (optionally only one hops / seq_len), in file order.
    Every line is checked and its labels recomputed first (`read_programs_file`): TaskError naming file:line."""
    return read_programs_file(path).select(hops, seq_len)


S = TypeVar("S", bound=ProgramGroup)


def with_file_prompt_settings(settings: S) -> S:
    """`settings` with the prompt settings of its `programs_file` (shots, template, seed, chat, task
    options) wherever the user did not give them; says on stderr which it uses. A setting given
    explicitly that differs from the file's is a TaskError; so is one the runner cannot apply."""
    source = getattr(settings, "programs_file", None)
    if source is None:
        return settings
    wanted = read_programs_file(source).prompt.as_settings()
    updates, conflicts = {}, []
    for name, value in wanted.items():
        if name not in type(settings).model_fields:
            if value is False or value is None:
                continue  # e.g. chat=False for a runner without a chat option
            raise TaskError(f"{source} was found with {name}={value!r}, which this run cannot apply")
        current = settings.n_shots if name == "shots" else getattr(settings, name)
        if current == value and type(current) is type(value):
            continue
        if name in settings.model_fields_set:
            conflicts.append(f"{name}={current!r} (file: {value!r})")
        else:
            updates[name] = value
    if conflicts:
        raise TaskError(f"{source} was found with other prompt settings than given: {', '.join(conflicts)}; "
                        "leave them out to use the file's")
    used = ", ".join(f"{name}={value!r}" for name, value in wanted.items())
    print(f"prompt settings from {source}: {used}", file=sys.stderr)
    return settings.model_copy(update=updates)


def check_pair_lengths(lm: LoadedModel, settings: PairSettings, shots: list[Program], n: int = 8) -> None:
    """The first `n` candidate pairs' prompts against the model's position limit, before any forward or
    W&B run (every prompt is checked again before its own forward)."""
    prompts = [text for pair in candidate_pairs(settings, n, shots) for text in pair_prompts(pair, shots, settings.template)]
    lm.check_lengths(len(ids) for ids in lm.tokenizer(prompts)["input_ids"])


def check_layers(settings: Any, n_layers: int) -> None:
    """A patch method's layers and knockout window against the model's layers."""
    bad = [layer for layer in settings.layers or [] if not 0 <= layer < n_layers]
    if bad or settings.layers == []:
        raise ModelError(f"layers must lie in 0..{n_layers - 1}, got {settings.layers}")
    if settings.method == "knockout" and settings.knockout_window > n_layers:
        raise ModelError(f"knockout_window {settings.knockout_window} exceeds the model's {n_layers} layers")


def checked_request(settings: PairSettings) -> tuple[PairSettings, list[Program]]:
    """What a patch run refuses before any model loads: the settings in effect (a programs file's
    prompt settings filled in) and the shots."""
    check_model_name(settings.model)
    settings = with_file_prompt_settings(settings)  # the file's shots, template, seed unless given
    require_answer_next(settings.template)  # also refuses unknown templates
    shots = patch_shots(settings)  # impossible requests fail here, before any model or W&B work
    candidate_pairs(settings, 1, shots)
    check_run_folder(settings)
    return settings, shots
