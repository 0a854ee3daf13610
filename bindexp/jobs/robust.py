"""Robust programs: the generated programs that every listed model answers correctly.

    python scripts/find_robust.py "--models=[smollm2-135m, Qwen/Qwen3-0.6B]" --hops=2 --seq_len=16 \
        --num_programs=200 --shots=3 --seed=0 --out=outputs/robust/h2-n16.jsonl

The candidates are exactly the programs `scripts/eval.py` scores with the same settings (same
seed, options, few-shot examples and prompt), so "robust" means: each model's eval run answers
it correctly. The file is JSON Lines, one program per line (see ROBUST_FORMAT), and
`bindexp.runs.pairs.load_robust_programs` turns it back into `Program` objects for a patch run,
trusting nothing it states (see bindexp/tasks/programs_file.py), and `with_file_prompt_settings`
makes the run use the prompt the programs were found with.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from bindexp.io.folder import ROBUST_FILE, check_writable_dir
from bindexp.io.programs import robust_meta_path, write_programs
from bindexp.models.cache import MODEL_CACHE
from bindexp.models.loading import check_model_name
from bindexp.runs.conditions import eval_conditions, score_condition
from bindexp.runs.settings import ConditionsGroup, RunSettings, StrList
from bindexp.runs.tracking import Tracker, check_run_folder
from bindexp.tasks.program import Program

ROBUST_FORMAT = """\
One JSON object per line, one line per program every model answered correctly:
  task, hops (null for tasks without hops), seq_len, seed, index (position among the eval
  run's programs of that hops x seq_len condition), program (the text, ending '#q: '),
  answer (the value Python computes), answer_text, query_var, spans ({role: [start, end]}),
  meta (the task's facts: chain lines, heuristic, draw ...), shots (number of few-shot
  examples: make_programs(task, shots, seq_len, seed, stream="shots", **options)), template,
  chat, options (task options without hops), models (the models checked), margins
  ({model: logit margin of the answer, or null when generated}).
A sidecar <name>.meta.json beside <name>.jsonl holds the settings and, per condition, the
candidate and robust counts.
"""


class RobustSettings(ConditionsGroup, RunSettings):
    """`scripts/find_robust.py`: programs every model in `models` answers correctly."""

    models: StrList = Field(min_length=1, description="the models that must all answer correctly")
    model: str | None = Field(None, description="not used: list the models with --models")  # type: ignore[assignment]
    out: str = Field("outputs/robust/" + ROBUST_FILE, description="where the JSONL file is written")

    @model_validator(mode="after")
    def _one_way_to_name_models(self) -> RobustSettings:
        if self.model is not None:
            raise ValueError("give the models as --models=[a, b], not --model")
        return self


@dataclasses.dataclass
class RobustOutcome:
    programs: list[dict[str, Any]]  # the lines of the file
    counts: list[dict[str, Any]]  # per condition: candidates, correct per model, robust
    path: Path


def find_robust(settings: RobustSettings, cache: Any = None) -> RobustOutcome:
    """Score every candidate with every model; keep the programs all answer correctly; write them."""
    cache = cache or MODEL_CACHE
    for name in settings.models:
        check_model_name(name)
    conditions = eval_conditions(settings)
    check_run_folder(settings)
    check_writable_dir(Path(settings.out).parent, "the folder of out")
    with Tracker(settings, "robust") as tracker:
        margins: list[list[dict[str, float | None]]] = [[{} for _ in c.programs] for c in conditions]
        correct: list[list[int]] = [[0] * len(c.programs) for c in conditions]
        per_model: dict[str, list[int]] = {}
        for name in settings.models:
            lm = cache.get(name, **settings.model_kwargs())
            per_model[name] = []
            for c_index, condition in enumerate(conditions):
                scores = score_condition(lm, condition, settings)
                per_model[name].append(sum(bool(s.correct) for s in scores))
                for p_index, score in enumerate(scores):
                    correct[c_index][p_index] += bool(score.correct)
                    margins[c_index][p_index][name] = score.margin
        lines, counts = [], []
        for c_index, condition in enumerate(conditions):
            kept = [i for i, n in enumerate(correct[c_index]) if n == len(settings.models)]
            lines += [_line(settings, condition.hops, i, condition.programs[i], margins[c_index][i]) for i in kept]
            counts.append({"hops": condition.hops, "seq_len": condition.seq_len, "candidates": len(condition.programs),
                           **{f"correct[{m}]": per_model[m][c_index] for m in settings.models}, "robust": len(kept)})
        path = write_robust(lines, tracker.folder.robust, settings, counts)
        tracker.write_summary({"n_robust": len(lines), "n_candidates": sum(c["candidates"] for c in counts)})
        tracker.log_artifact("robust-programs", [path, robust_meta_path(path)], settings.model_dump(mode="json"))
    target = Path(settings.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.resolve() != path.resolve():
        shutil.copyfile(path, target)
        shutil.copyfile(robust_meta_path(path), robust_meta_path(target))
    return RobustOutcome(lines, counts, target)


def _line(settings: RobustSettings, hops: int | None, index: int, program: Program,
          margins: dict[str, float | None]) -> dict[str, Any]:
    line = program.to_dict()  # task, text, answer, query_var, seq_len, seed, spans, meta
    line["program"] = line.pop("text")
    return {
        **line, "hops": hops, "index": index, "answer_text": program.answer_text,
        "shots": settings.n_shots, "template": settings.template, "chat": settings.chat,
        "options": settings.task_options(), "models": list(settings.models), "margins": margins,
    }


def write_robust(lines: list[dict[str, Any]], path: Path, settings: RobustSettings,
                 counts: list[dict[str, Any]]) -> Path:
    sidecar = {"settings": settings.model_dump(mode="json"), "conditions": counts, "format": ROBUST_FORMAT}
    return write_programs(path, lines, sidecar)
