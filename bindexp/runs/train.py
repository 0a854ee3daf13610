"""The training runner: a transformer trained from scratch on binding programs, as one W&B run.

    outcome = run_train(TrainSettings(preset="cpu", steps=500))
    outcome.summary["systematic_step"], outcome.checkpoint      # a directory load_model() reads

History (every `eval_every` steps, keyed by `train/step`): train/loss, train/lr, validation/...,
heldout/..., longer_len{L}/..., more_hops{h}/... (see bindexp.training.evaluation). Checkpoints
every `checkpoint_every` steps and at the end, locally and as W&B artifacts of type `model`
(aliases latest, best, step-N). `--resume=True` continues from the latest checkpoint in
`--checkpoint_dir` with the same data order; on CPU the result is bit-identical to a run that
was never interrupted.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bindexp.models.loading import ModelError, resolve_device, resolve_dtype
from bindexp.runs.train_settings import TrainSettings
from bindexp.runs.tracking import Tracker
from bindexp.tasks.program import TaskError
from bindexp.training.data import DataSpec, ProgramData, Supervision
from bindexp.vocab import PHASE_KEYS, STEP_KEY

SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.jsonl"


class TrainError(TaskError):
    """A training run that cannot start as asked (one line)."""


@dataclasses.dataclass
class TrainOutcome:
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    out_dir: Path
    checkpoint_dir: Path
    checkpoint: Path | None  # the latest checkpoint written (None if stopped before the first)
    run_dir: Path | None


def data_spec(settings: TrainSettings) -> DataSpec:
    return DataSpec(
        seq_len=settings.seq_len, hops=tuple(settings.hops), data_seed=settings.data_seed,
        distractor_chains=settings.distractor_chains, max_distractor_depth=settings.max_distractor_depth,
        spacing=settings.spacing, heldout_fraction=settings.heldout_fraction,
        train_programs=settings.train_programs, n_eval=settings.n_eval,
        longer_seq_lens=tuple(settings.longer_seq_len), n_systematic_test=settings.n_systematic_test,
        supervision=Supervision(settings.queries_per_program, settings.line_targets, settings.relabel),
    )


def arch_spec(settings: TrainSettings):
    from bindexp.training.architecture import ArchSpec

    return ArchSpec(settings.model, settings.n_layers, settings.n_heads, settings.d_model, settings.d_ff,
                    settings.activation, settings.dropout, settings.max_positions, settings.conv_kernel)


def optim_spec(settings: TrainSettings, steps: int | None = None):
    """The optimiser and schedule of `settings` (over `steps` instead of settings.steps if given)."""
    from bindexp.training.loop import OptimSpec

    warmup = settings.warmup_steps if steps is None else min(settings.warmup_steps, steps)
    return OptimSpec(settings.lr, settings.weight_decay, settings.beta1, settings.beta2, warmup,
                     settings.steps if steps is None else steps, settings.grad_clip, settings.decay_steps)


def _checkpoint_to_resume(settings: TrainSettings) -> Path | None:
    """The checkpoint a resumed run starts from (None: start afresh); refuses incompatible settings."""
    from bindexp.training.checkpoint import TRAINER_DIR, latest_checkpoint

    if not settings.resume:
        return None
    if settings.checkpoint_dir is None:
        raise TrainError("resume=True needs checkpoint_dir (where the killed run saved its checkpoints)")
    latest = latest_checkpoint(Path(settings.checkpoint_path()))
    if latest is None:
        return None
    state_path = latest / TRAINER_DIR / "state.json"
    if not state_path.exists():
        raise TrainError(f"checkpoint {latest} has no {TRAINER_DIR}/state.json; it cannot be resumed")
    saved = json.loads(state_path.read_text())["settings"]
    differing = sorted(k for k, v in settings.training_values().items() if saved.get(k) != v)
    if differing:
        key = differing[0]
        raise TrainError(f"cannot resume {latest}: {key}={saved.get(key)!r} there but {getattr(settings, key)!r} now "
                         f"({len(differing)} setting(s) differ); resume with the killed run's settings")
    return latest


def _check(settings: TrainSettings) -> tuple[DataSpec, Path | None]:
    """Everything that can be refused before a model or a W&B run exists."""
    spec = data_spec(settings)
    spec.check()
    # "a = b\n" per line, the query and answer, each extra query "\n#x: d"
    longest = max([settings.seq_len, *settings.longer_seq_len]) * 6 + 8 + 6 * (settings.queries_per_program - 1)
    if settings.model == "gpt2" and longest > settings.max_positions:
        raise TrainError(f"programs of {longest} tokens exceed max_positions={settings.max_positions}")
    device = resolve_device(settings.device)
    resolve_dtype(settings.dtype, device)
    if settings.init_from is not None:
        _check_init_from(settings)
    return spec, _checkpoint_to_resume(settings)


ARCH_KEYS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads", "num_key_value_heads", "conv_kernel", "n_embd", "n_layer", "n_head", "n_inner")


def _check_init_from(settings: TrainSettings) -> None:
    """init_from must be a model folder of exactly this run's architecture (checked on its config)."""
    from bindexp.models.loading import check_model_dir
    from bindexp.training.architecture import model_config, program_tokenizer

    folder = Path(settings.init_from)
    if not folder.is_dir():
        raise TrainError(f"init_from {settings.init_from!r} is not a checkpoint folder")
    check_model_dir(folder)
    saved = json.loads((folder / "config.json").read_text())
    wanted = model_config(arch_spec(settings), program_tokenizer()).to_dict()
    differing = [k for k in ARCH_KEYS if saved.get(k) != wanted.get(k)]
    if differing:
        key = differing[0]
        raise TrainError(f"init_from {folder}: {key}={saved.get(key)!r} there but {wanted.get(key)!r} in this run's "
                         "architecture; use the settings it was trained with")


def run_train(settings: TrainSettings) -> TrainOutcome:
    """Train as one W&B run (job_type `train`); every file is also written locally."""
    spec, resume_from = _check(settings)
    with Tracker(settings, "train") as tracker:
        return _train(settings, spec, resume_from, tracker)


def _train(settings: TrainSettings, spec: DataSpec, resume_from: Path | None, tracker: Tracker) -> TrainOutcome:
    import torch
    from tqdm.auto import tqdm

    from bindexp.training.architecture import n_parameters, new_model, program_tokenizer
    from bindexp.training.checkpoint import load_trainer_state, load_weights, record_checkpoint, save_checkpoint
    from bindexp.training.evaluation import END_SETS, evaluate_sets, heuristic_plateau, is_systematic
    from bindexp.training.loop import make_batch, make_optimizer, train_step

    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    amp_dtype = resolve_dtype(settings.dtype, device)
    label = tracker.run.id if tracker.run is not None else tracker.out_dir.name
    root = Path(settings.checkpoint_path()) if settings.checkpoint_dir else Path(settings.output_dir) / "checkpoints" / label
    tracker.define_step(STEP_KEY)

    data = ProgramData(spec)
    tokenizer = program_tokenizer()
    try:
        model = new_model(arch_spec(settings), tokenizer, settings.seed).to(device)
    except ValueError as err:
        raise ModelError(f"cannot build the model: {err}") from None
    if settings.init_from is not None and resume_from is None:
        load_weights(model, Path(settings.init_from))
    optim = optim_spec(settings)
    optimizer, scheduler = make_optimizer(model, optim)
    torch.manual_seed(settings.seed)  # the dropout stream; restored exactly on resume

    start, history, losses, best = 0, [], [], None
    artifact_name = f"model-{settings.run_name or label}"
    if resume_from is not None:
        state = load_trainer_state(resume_from, model, optimizer, scheduler)
        start, history, best = state["step"], state["history"], state.get("best_metric")
        losses = state.get("losses", [])
        artifact_name = state.get("artifact_name", artifact_name)
        print(f"resuming from {resume_from} (step {start})")
    plateau = heuristic_plateau(data.eval_sets["validation"])
    tracker.update_config({
        "n_params": n_parameters(model), "resumed_from_step": start or None, "checkpoint_root": str(root),
        "heuristic_plateau": plateau, "eval_sets": {k: len(v) for k, v in data.eval_sets.items()},
        "heldout_pairs": sorted("".join(p) for p in data.heldout),
    })
    history_path = tracker.out_dir / HISTORY_FILE

    def record(row: dict[str, Any]) -> None:
        tracker.log(row)
        with open(history_path, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    checkpoint, done, stopped = resume_from, start, False
    loss_sum, loss_n = torch.zeros((), device=device), 0
    bar = tqdm(total=settings.steps, initial=start, disable=not settings.progress, desc="training", unit="step")
    solved = False
    for step in range(start, settings.steps):
        batch = make_batch(tokenizer, data.train_examples(step, settings.batch_size), settings.loss_on, device)
        loss_sum += train_step(model, batch, optimizer, scheduler, optim, amp_dtype)
        loss_n += 1
        done = step + 1
        bar.update(1)
        if done % settings.log_every == 0 or done == settings.steps:
            losses.append({STEP_KEY: done, "train/loss": float(loss_sum) / loss_n, "train/lr": scheduler.get_last_lr()[0],
                           "train/tokens": done * batch.n_tokens})
            record(losses[-1])
            loss_sum.zero_()
            loss_n = 0
        at_checkpoint = done % settings.checkpoint_every == 0 or done == settings.steps
        if done % settings.eval_every == 0 or at_checkpoint:
            row = {STEP_KEY: done, **evaluate_sets(model, tokenizer, data.eval_sets, settings.eval_batch_size)}
            history.append(row)
            record(row)
            bar.set_postfix(accuracy=f"{row['validation/accuracy']:.3f}")
            solved = settings.stop_when_systematic and is_systematic(row)
        if at_checkpoint or solved:
            metric = history[-1]["validation/accuracy"]
            is_best = best is None or metric > best
            best = metric if is_best else best
            checkpoint = save_checkpoint(root, done, model, tokenizer, optimizer, scheduler, {
                "settings": settings.model_dump(mode="json"), "history": history, "losses": losses, "best_metric": best,
                "artifact_name": artifact_name, "heuristic_plateau": plateau, "run_folder": str(tracker.out_dir.resolve())})
            record_checkpoint(root, done, best=is_best, metric=metric, keep=settings.keep_checkpoints)
            if settings.log_artifacts:
                aliases = ["latest", f"step-{done}"] + (["best"] if is_best else [])
                tracker.log_named_artifact(artifact_name, "model", [checkpoint], aliases, {"step": done, **history[-1]})
        if solved:
            print(f"systematic at step {done}: stopping (stop_when_systematic=True)")
            break
        if settings.stop_after is not None and done >= settings.stop_after and done < settings.steps:
            stopped = True
            print(f"stopped after step {done} without saving (stop_after={settings.stop_after})")
            break
    bar.close()

    summary = _summary(settings, history, plateau, done, stopped, root, n_parameters(model))
    if not stopped:
        summary.update(evaluate_sets(model, tokenizer, data.eval_sets, settings.eval_batch_size,
                                     names=[n for n in END_SETS if n in data.eval_sets], intervals=True))
        summary.update({k: v for k, v in history[-1].items() if k != STEP_KEY} if history else {})
    tracker.write_json(SUMMARY_FILE, summary)
    tracker.set_summary(summary)
    if history:
        save_training_plot(tracker, history + losses, plateau, summary, settings)
    print(_describe(summary))
    return TrainOutcome(summary, history, tracker.out_dir, root, checkpoint, tracker.run_dir)


def save_training_plot(tracker: Tracker, history: list[dict], plateau: float, summary: dict[str, Any],
                       settings: TrainSettings) -> None:
    """The run's history (across resumptions) as `training.png` in its folder, and as a W&B image."""
    from bindexp.runs.plots import plot_training

    boundaries = {key: summary[key] for key in PHASE_KEYS}
    title = (f"{settings.model} {settings.n_layers}L d{settings.d_model} ({summary['n_params'] / 1e6:.2f}M params), "
             f"{settings.seq_len}-line programs, hops {settings.hops}; {settings.n_eval} programs per set")
    plot_training(history, plateau, boundaries, title).savefig(tracker.folder.training_plot, dpi=110)
    tracker.log_image("training", tracker.folder.training_plot)


def _summary(settings: TrainSettings, history: list[dict], plateau: float, done: int, stopped: bool,
             root: Path, n_params: int) -> dict[str, Any]:
    from bindexp.training.checkpoint import read_index
    from bindexp.training.evaluation import phase_boundaries

    index = read_index(root)
    return {
        "steps_done": done,
        "completed": not stopped,
        "n_params": n_params,
        "heuristic_plateau": plateau,
        **phase_boundaries(history, plateau),
        "checkpoint_dir": str(root),
        "checkpoint": str(root / index["latest"]) if index.get("latest") else None,
        "best_checkpoint": str(root / index["best"]) if index.get("best") else None,
        "best_validation_accuracy": index.get("best_metric"),
    }


def _describe(summary: dict[str, Any]) -> str:
    lines = [f"steps: {summary['steps_done']}" + ("" if summary["completed"] else " (stopped early)")]
    for key in ("validation/accuracy", "test/accuracy", "systematic/accuracy", "heldout/accuracy"):
        if key in summary:
            lines.append(f"{key}: {summary[key]:.3f}")
    lines.append(f"heuristic plateau: {summary['heuristic_plateau']:.3f}; heuristic used from step "
                 f"{summary['heuristic_step']}; past the plateau at step {summary['past_heuristic_step']}; "
                 f"systematic (>0.99) at step {summary['systematic_step']}")
    lines.append(f"checkpoint: {summary['checkpoint']}")
    return "\n".join(lines)
