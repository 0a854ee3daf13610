"""Mechanism over training: the patch grid by role on several checkpoints of a training run, as one
W&B run (job_type `over_training`), beside the training run's accuracy phases.

    outcome = run_over_training(OverTrainingSettings(checkpoints="outputs/checkpoints/cpu0", steps=["all"],
                                                     hops=2, num_programs=20))
    outcome.table        # step, role, layer, metric, value, ci_low, ci_high, n (one block per checkpoint)

Each checkpoint's grid is an ordinary patch run (`run_patch`, W&B disabled) whose folder lies in
this run's folder, `checkpoint_runs/step-NNNNNN/` (grid, heatmap, pairs, summary, config). The
pairs are the same at every checkpoint (`only_correct=False` by default: an early checkpoint
answers at chance), so the curves compare like with like. The training run's accuracy curve and
phase boundaries come from the newest checkpoint's `trainer/state.json` (its history runs across
resumptions; the training job stores the heuristic plateau and its run folder there).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from bindexp.errors import InputError, ModelError
from bindexp.io.checkpoints import INDEX_FILE, read_index, read_trainer_state, step_name
from bindexp.io.folder import CHECKPOINT_RUNS_DIR, POINTER_ENV
from bindexp.io.tables import write_csv, write_figure
from bindexp.jobs.patch import PatchSettings, run_patch
from bindexp.models.cache import ModelCache
from bindexp.models.loading import check_model_dir
from bindexp.plots.training import plot_over_training, plot_routes_over_training
from bindexp.runs.pairs import candidate_pairs, check_layers, checked_request, patch_shots, with_file_prompt_settings
from bindexp.runs.patching import headline_metric
from bindexp.runs.settings import TASK_OPTION_FIELDS, StrList
from bindexp.runs.tracking import Tracker, input_digest
from bindexp.tasks.registry import get_task
from bindexp.vocab import PHASE_KEYS, STEP_KEY

ALIASES = ("latest", "best")
TRAINING_PROGRAM_FIELDS = ("seq_len", "spacing", "distractor_chains", "max_distractor_depth")


class OverTrainingSettings(PatchSettings):
    """`scripts/checkpoints.py`: one patch grid per checkpoint of a training run. The patch settings
    are those of `scripts/patch.py`; program settings not given (seq_len, spacing, distractor
    chains) are the training run's."""

    checkpoints: str = Field(description="a training run's checkpoint folder (the one holding checkpoints.json)")
    steps: StrList = Field(["all"], description="checkpoints: steps ([200, 400]), latest, best, or all (every one kept)")
    metric: str | None = Field(None, description="None: the method's headline metric (normalized_effect for exact)")
    model: str | None = Field(None, description="unused: each checkpoint is the model")
    shots: int | None = Field(0, ge=0, description="worked examples before each program (trained models saw none)")
    only_correct: bool = Field(False, description="False: the same pairs at every checkpoint")
    min_gap: float = Field(0.0, ge=0, description="0: every pair at every checkpoint (early ones have small gaps)")
    routes: StrList | None = Field(None, description=(
        "attention routes 'destination<-source' (token roles, e.g. chain2_end<-root_value) read at every "
        "checkpoint on the same pairs' clean programs: per layer, the head with the highest mean attention"))

    @model_validator(mode="after")
    def _checkpoints_are_the_models(self) -> OverTrainingSettings:
        if self.model is not None:
            raise ValueError("the checkpoints are the models: give the training run's folder as --checkpoints, not --model")
        if self.positions != "roles":
            raise ValueError("over_training compares roles across checkpoints: positions must be roles")
        parse_routes(self.routes)
        return self


ROUTE_ARROW = "<-"


def parse_routes(routes: list[str] | None) -> list[tuple[str, str]]:
    """[(destination, source)] of routes written 'destination<-source'; ValueError for any other form."""
    parsed = []
    for route in routes or []:
        destination, arrow, source = (part.strip() for part in route.partition(ROUTE_ARROW))
        if not (arrow and destination and source) or ROUTE_ARROW in source:
            raise ValueError(f"route {route!r} is not 'destination<-source' (two token roles, e.g. chain2_end<-root_value)")
        parsed.append((destination, source))
    if len(set(parsed)) != len(parsed):
        raise ValueError("routes names a route twice")
    return parsed


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    aliases: tuple[str, ...]  # which of latest, best it is


@dataclasses.dataclass
class TrainingRecord:
    """What the training run says about itself: its settings, evaluation history and phases."""

    settings: dict[str, Any]
    history: list[dict[str, Any]]
    heuristic_plateau: float | None
    boundaries: dict[str, int | None]
    run_folder: str | None


@dataclasses.dataclass
class OverTrainingOutcome:
    table: Any  # pandas DataFrame: step, role, layer[, head], metric, value, ci_low, ci_high, n
    summary: dict[str, Any]
    grids: dict[int, Any]  # step -> Grid
    out_dir: Path
    run_dir: Path | None


def checkpoint_index(root: Path) -> dict[str, Any]:
    """checkpoints.json of a training run's checkpoint folder (checked by `read_index`); InputError
    when there is none or it lists no checkpoint."""
    path = root / INDEX_FILE
    if not path.is_file():
        raise InputError(f"checkpoints={root}: no {INDEX_FILE} there; give a training run's --checkpoint_dir")
    index = read_index(root)
    if not index.get("steps"):
        raise InputError(f"{path}: lists no checkpoints")
    return index


def checkpoint_layers(path: Path) -> int:
    """A checkpoint's number of layers, from its config.json (the folder checked, nothing loaded)."""
    check_model_dir(path)
    config = json.loads((path / "config.json").read_text())
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        raise ModelError(f"{path / 'config.json'}: no number of layers (num_hidden_layers or n_layer)")
    return layers


def _step_of(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def choose_checkpoints(root: Path, requested: list[str]) -> list[Checkpoint]:
    """The checkpoints `requested` names (steps, `latest`, `best`, `all`), in step order, each once."""
    index = checkpoint_index(root)
    kept: list[str] = index["steps"]
    known = f"kept in {root}: steps {', '.join(str(_step_of(n)) for n in kept)}, or latest, best, all"
    if not requested:
        raise InputError(f"steps is empty; name checkpoints {known}")
    names: list[str] = []
    for word in requested:
        word = word.strip()
        if word == "all":
            names += kept
        elif word in ALIASES:
            if not index.get(word):
                raise InputError(f"{root / INDEX_FILE} names no {word} checkpoint")
            names.append(index[word])
        elif re.fullmatch(r"(step-)?\d+", word):
            name = step_name(int(word.removeprefix("step-")))
            if name not in kept:
                raise InputError(f"no checkpoint at step {int(word.removeprefix('step-'))}; checkpoints {known}")
            names.append(name)
        else:
            raise InputError(f"unknown checkpoint {word!r}; checkpoints {known}")
    chosen = []
    for name in sorted(set(names), key=_step_of):
        path = root / name
        if not (path / "config.json").is_file():
            raise InputError(f"checkpoint {path} is listed in {INDEX_FILE} but its model files are missing")
        chosen.append(Checkpoint(_step_of(name), path, tuple(a for a in ALIASES if index.get(a) == name)))
    return chosen


def training_record(root: Path) -> TrainingRecord:
    """The newest checkpoint's trainer state: settings, history, heuristic plateau, phase boundaries."""
    from bindexp.training.evaluation import phase_boundaries

    index = checkpoint_index(root)
    if not index.get("latest"):
        raise InputError(f"{root / INDEX_FILE}: names no latest checkpoint, whose trainer state holds the history")
    state = read_trainer_state(root / index["latest"])  # a damaged state.json: one line naming it
    history = [row for row in state["history"] if isinstance(row, dict) and STEP_KEY in row]
    plateau = state.get("heuristic_plateau")
    boundaries = phase_boundaries(history, plateau) if plateau is not None else dict.fromkeys(PHASE_KEYS)
    return TrainingRecord(state.get("settings", {}), history, plateau, boundaries, state.get("run_folder"))


def with_training_programs(settings: OverTrainingSettings, training: dict[str, Any]) -> tuple[OverTrainingSettings, list[str]]:
    """The settings with the program settings not given explicitly taken from the training run's."""
    filled = {name: training[name] for name in TRAINING_PROGRAM_FIELDS
              if name in training and name not in settings.model_fields_set}
    return (settings.model_copy(update=filled) if filled else settings), sorted(filled)


def checkpoint_patch_settings(settings: OverTrainingSettings, checkpoint: Checkpoint, runs_dir: Path) -> PatchSettings:
    """The patch run of one checkpoint: these patch settings on that model, W&B off, its folder in `runs_dir`."""
    values = settings.model_dump(exclude={"checkpoints", "steps", "metric", "routes"}
                                 | {name for name in TASK_OPTION_FIELDS if name not in settings.model_fields_set})
    values.update(model=str(checkpoint.path), wandb_mode="disabled", output_dir=str(runs_dir),
                  run_name=step_name(checkpoint.step), tags=[], group=None, sweep=None)
    return PatchSettings(**values)


def method_metrics(method: str) -> tuple[str, ...]:
    """The metrics a method's grid holds."""
    from bindexp.interventions.methods.atp import ATP_METRICS
    from bindexp.interventions.methods.knockout import KNOCKOUT_METRICS
    from bindexp.interventions.results.metrics import METRICS

    return {"atp": ATP_METRICS, "knockout": KNOCKOUT_METRICS}.get(method, METRICS)


@contextmanager
def _no_run_pointer() -> Iterator[None]:
    """A nested patch run must not announce itself as the run a sweep runner started (this one is)."""
    saved = os.environ.pop(POINTER_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[POINTER_ENV] = saved


def checkpoint_rows(step: int, grid: Any, metric: str):
    """The tidy block of one checkpoint: step, role, layer[, head], metric, value, ci_low, ci_high, n
    (n: pairs with a value for this metric in the cell)."""
    frame = grid.to_frame()
    count = f"{metric}_n" if f"{metric}_n" in frame else "n"
    keys = [axis for axis in grid.axes if axis != "layer"]
    block = frame[keys[:1] + ["layer"] + keys[1:]].rename(columns={keys[0]: "role"})
    block.insert(0, "step", step)
    return block.assign(metric=metric, value=frame[metric], ci_low=frame[f"{metric}_ci_low"],
                        ci_high=frame[f"{metric}_ci_high"], n=frame[count].astype(int))


def run_over_training(settings: OverTrainingSettings) -> OverTrainingOutcome:
    """One patch grid per chosen checkpoint, as one W&B run (job_type `over_training`)."""
    root = Path(settings.checkpoints)
    chosen = choose_checkpoints(root, settings.steps)
    if settings.metric is not None and settings.metric not in method_metrics(settings.method):
        raise InputError(f"metric {settings.metric!r} is not in a {settings.method} grid; "
                         f"its metrics: {', '.join(method_metrics(settings.method))}")
    training = training_record(root)
    settings, filled = with_training_programs(settings, training.settings)
    first = checkpoint_patch_settings(settings, chosen[0], Path(settings.output_dir))
    _, shots = checked_request(first.model_copy(update={"run_name": None}))  # programs, pairs, templates,
    # output_dir: refused before any model loads
    check_route_roles(first, shots, settings.routes)
    for checkpoint in chosen:  # every checkpoint, not only the first: refused before any model loads
        try:
            check_layers(first, checkpoint_layers(checkpoint.path))
        except ModelError as err:
            raise ModelError(f"{checkpoint.path}: {err}") from None
    cache = ModelCache()  # one checkpoint in memory at a time
    with Tracker(settings, "over_training") as tracker:
        tracker.update_config({
            "checkpoint_steps": [c.step for c in chosen], "from_training": filled,
            "training_run_folder": training.run_folder, "heuristic_plateau": training.heuristic_plateau,
            "inputs": {**tracker.extra.get("inputs", {}),
                       "checkpoints": {"path": str(root.resolve()), "digest": input_digest(root / INDEX_FILE)}},
        })
        return _analyse(settings, chosen, training, tracker, cache)


def check_route_roles(settings: PatchSettings, shots: list, routes: list[str] | None) -> None:
    """Every role a route names is a token role of these programs (one drawn pair): InputError otherwise."""
    routes = parse_routes(routes)
    if not routes:
        return
    roles = list(dict.fromkeys([*candidate_pairs(settings, 1, shots)[0].original.spans, "final"]))
    for destination, source in routes:
        for role in (destination, source):
            if role not in roles:
                raise InputError(f"route {destination}{ROUTE_ARROW}{source}: {role!r} is not a token role of these "
                                 f"programs ({', '.join(roles)})")


def route_rows(step: int, lm: Any, pairs: list, settings: PatchSettings, shots: list) -> Any:
    """One checkpoint's routes: step, route, layer, head (the head with the highest mean attention
    from destination to source at that layer), attention with its 95% mean interval, n (programs)."""
    import numpy as np
    import pandas as pd

    from bindexp.interventions.engine.plan import plan_grid
    from bindexp.interventions.readouts.attention import ATTENTION_METRIC, role_attention
    from bindexp.runs.analysis import sequences_and_roles

    routes = parse_routes(settings.routes)
    plan = plan_grid(lm, pairs, shots=shots, template=settings.template)
    sequences, roles = sequences_and_roles(plan)
    destinations = list(dict.fromkeys(d for d, _ in routes))
    sources = list(dict.fromkeys(s for _, s in routes))
    grids = role_attention(lm, sequences, roles, destinations, sources, prefix=plan.prefix)
    rows = []
    for destination, source in routes:
        grid = grids[destination]
        column = grid.labels["role"].index(source)
        mean = grid.mean[ATTENTION_METRIC][:, column, :]  # [layer, head]
        for li, layer in enumerate(grid.labels["layer"]):
            if np.isnan(mean[li]).all():
                continue
            head = int(np.nanargmax(mean[li]))
            rows.append({"step": step, "route": f"{destination}{ROUTE_ARROW}{source}", "layer": layer, "head": head,
                         "attention": float(mean[li, head]),
                         "ci_low": float(grid.ci_low[ATTENTION_METRIC][li, column, head]),
                         "ci_high": float(grid.ci_high[ATTENTION_METRIC][li, column, head]),
                         "n": int(grid.counts[ATTENTION_METRIC][li, column, head])})
    return pd.DataFrame(rows, columns=["step", "route", "layer", "head", "attention", "ci_low", "ci_high", "n"])


def _analyse(settings: OverTrainingSettings, chosen: list[Checkpoint], training: TrainingRecord, tracker: Tracker,
             cache: ModelCache) -> OverTrainingOutcome:
    import pandas as pd

    from bindexp.interventions.results.summary import grid_summary

    value_role = get_task(settings.task).value_role
    runs_dir = tracker.out_dir / CHECKPOINT_RUNS_DIR
    metric, grids, blocks, per_step, route_blocks = settings.metric, {}, [], {}, []
    for checkpoint in chosen:
        patch_settings = checkpoint_patch_settings(settings, checkpoint, runs_dir)
        with _no_run_pointer():
            outcome = run_patch(patch_settings, cache)
        if settings.routes:
            shots = patch_shots(with_file_prompt_settings(patch_settings))  # the patch run's own shots
            lm = cache.get(patch_settings.model, **patch_settings.model_kwargs())
            route_blocks.append(route_rows(checkpoint.step, lm, outcome.pairs, settings, shots))
        cache.unload(patch_settings.model)
        metric = metric or headline_metric(patch_settings, outcome.grid)
        grids[checkpoint.step] = outcome.grid
        blocks.append(checkpoint_rows(checkpoint.step, outcome.grid, metric))
        per_step[checkpoint.step] = {**grid_summary(outcome.grid, metric, value_role),
                                     "aliases": list(checkpoint.aliases), "pairs_used": outcome.summary["pairs_used"]}
    table = pd.concat(blocks, ignore_index=True)
    write_csv(table, tracker.folder.over_training_table)
    _log_history(tracker, metric, per_step, training)
    write_figure(plot_over_training(per_step, metric, training, title=_title(settings, metric)),
                 tracker.folder.over_training_plot, dpi=120)
    summary = {"metric": metric, "steps": sorted(per_step), "heuristic_plateau": training.heuristic_plateau,
               **training.boundaries, "by_step": {str(step): s for step, s in per_step.items()},
               "checkpoint_runs": str(runs_dir)}
    if route_blocks:
        routes = pd.concat(route_blocks, ignore_index=True)
        write_csv(routes, tracker.folder.routes_over_training_table)
        best = best_route_heads(routes)
        summary["routes"] = _route_summary(best)
        tracker.log_steps(STEP_KEY, [{STEP_KEY: step, **dict(zip(block["route"], block["attention"].astype(float)))}
                                     for step, block in best.groupby("step")], "attention")
        write_figure(plot_routes_over_training(best, training, title=_routes_title(settings)),
                     tracker.folder.routes_over_training_plot, dpi=120)
        tracker.log_table("routes_over_training", routes)
        tracker.log_image("routes_over_training", tracker.folder.routes_over_training_plot)
    tracker.write_summary(summary)
    tracker.log_table("over_training", table)
    tracker.log_image("over_training", tracker.folder.over_training_plot)
    return OverTrainingOutcome(table, summary, grids, tracker.out_dir, tracker.run_dir)


def best_route_heads(routes: Any) -> Any:
    """Per (route, step), the row of the (layer, head) with the highest attention."""
    return routes.loc[routes.groupby(["route", "step"], sort=False)["attention"].idxmax()].reset_index(drop=True)


def _route_summary(best: Any) -> dict[str, Any]:
    """Per route: at each step, the (layer, head) with the highest attention and its value."""
    return {route: {str(int(r.step)): {"layer": int(r.layer), "head": int(r.head), "attention": float(r.attention),
                                       "ci_low": float(r.ci_low), "ci_high": float(r.ci_high), "n": int(r.n)}
                    for r in block.itertuples()}
            for route, block in best.groupby("route", sort=False)}


def _log_history(tracker: Tracker, metric: str, per_step: dict[int, dict], training: TrainingRecord) -> None:
    """Against `train/step`: `<metric>/<role>` (best over layers), `layers/best_<role>`,
    `layers/handoff`, and the training run's evaluations as `training/<key>`."""
    best = {step: s["best_layer_by_column"] for step, s in per_step.items()}
    tracker.log_steps(STEP_KEY, [{STEP_KEY: step, **{role: b[metric] for role, b in columns.items()}}
                                 for step, columns in best.items()], metric)
    tracker.log_steps(STEP_KEY, [{STEP_KEY: step, **{f"best_{role}": b["peak_layer"] for role, b in best[step].items()},
                                  **({"handoff": s["handoff_layer"]} if s.get("handoff_layer") is not None else {})}
                                 for step, s in per_step.items()], "layers")
    tracker.log_steps(STEP_KEY, [{k: v for k, v in row.items() if isinstance(v, (int, float))}
                                 for row in training.history], "training")


def _routes_title(settings: OverTrainingSettings) -> str:
    axes = ", ".join(f"{axis}={getattr(settings, axis)}" for axis in get_task(settings.task).axes)
    return (f"{Path(settings.checkpoints).name}: attention of each route's best head over training "
            f"({settings.task}, {axes}; {settings.num_programs} programs)")


def _title(settings: OverTrainingSettings, metric: str) -> str:
    axes = ", ".join(f"{axis}={getattr(settings, axis)}" for axis in get_task(settings.task).axes)
    return (f"{Path(settings.checkpoints).name}: {settings.method} {settings.site} {metric} by role over training "
            f"({settings.task}, {axes}, {settings.counterfactual})")
