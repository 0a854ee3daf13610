"""The train job: a transformer trained from scratch on a task's programs (binding, the one task
with training support for now), as one W&B run (job_type `train`), with the `paper` and `cpu`
presets. The loop is `bindexp.training.trainer.Trainer`; this module checks, wires and records.

    outcome = run_train(TrainSettings(preset="cpu", steps=500))
    outcome.summary["systematic_step"], outcome.checkpoint      # a directory load_model() reads

History (every `eval_every` steps, keyed by `train/step`): train/loss, train/lr, validation/...,
heldout/..., longer_len{L}/..., more_hops{h}/... (see bindexp.training.evaluation). A preset fills
every setting it names unless the command line (or a BINDEXP_* variable) gives that setting
explicitly: `--preset=cpu --steps=500` is the cpu preset with 500 steps. Checkpoints
every `checkpoint_every` steps and at the end, locally and as W&B artifacts of type `model`
(aliases latest, best, step-N). `--resume=True` continues from the latest checkpoint in
`--checkpoint_dir` with the same data order; on CPU the result is bit-identical to a run that
was never interrupted.

One writer per checkpoint folder (`claim_checkpoints`: a lock naming the holder; a fresh run into
another run's checkpoints only with `--overwrite_checkpoints=True`); every file a resume reads is
checked first; a non-finite loss or weight stops the run with one line (`TrainingDiverged`), the
last good checkpoint kept.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from bindexp.errors import TaskError
from bindexp.io.checkpoints import (
    TRAINER_DIR,
    clean_staging,
    clear_checkpoints,
    holds_checkpoints,
    latest_checkpoint,
    read_index,
    read_trainer_files,
)
from bindexp.io.folder import SUMMARY_FILE, check_writable_dir
from bindexp.io.locks import FolderLock
from bindexp.io.streams import append_lines, write_lines
from bindexp.io.tables import write_figure
from bindexp.models.loading import resolve_device, resolve_dtype
from bindexp.plots.training import plot_training
from bindexp.runs.naming import run_identity
from bindexp.runs.settings import DeviceGroup, WandbGroup
from bindexp.runs.tracking import Tracker, check_run_folder
from bindexp.tasks import DEFAULT_TASK, MAX_HOPS
from bindexp.training.data import DataSpec, ProgramData, Supervision
from bindexp.vocab import PHASE_KEYS, STEP_KEY

PRESETS: dict[str, dict[str, Any]] = {
    # arXiv 2505.20896: 12 layers, 8 heads of 64, d 512, RoPE, 17-line programs (16 assignments +
    # query), batch 64, ~105k steps (15 epochs of 450k programs), warmup + linear decay, dropout 0.1.
    # Approximated Llama-style (RoPE, RMSNorm, gated GELU MLP); d_ff 1365 keeps the paper's
    # 37.8M parameters with a gated MLP. The paper gives no learning rate; 3e-4 is ours.
    "paper": dict(
        model="llama", n_layers=12, n_heads=8, d_model=512, d_ff=1365, activation="gelu", dropout=0.1,
        seq_len=16, hops=[1, 2, 3, 4], spacing="spaced", train_programs=450_000, heldout_fraction=0.1,
        batch_size=64, steps=105_400, lr=3e-4, warmup_steps=1_000, weight_decay=0.01,
        n_eval=1_000, eval_every=1_000, checkpoint_every=5_000, longer_seq_len=[20, 24], loss_on="answer",
    ),
    # For a 2-core CPU, the recipe that solves 8-line programs (docs/RESULTS.md): a 4-layer, d 64
    # Llama-style model with a width-4 causal convolution before each attention block, 4 supervised
    # queries per training program and a target at the end of every line; AdamW without weight
    # decay, constant learning rate after warmup, linear decay over the last 2,000 steps.
    "cpu": dict(
        model="llama", n_layers=4, n_heads=4, d_model=64, d_ff=128, activation="gelu", dropout=0.0, conv_kernel=4,
        seq_len=8, hops=[1, 2, 3, 4], spacing="compact", train_programs=None, heldout_fraction=0.1,
        queries_per_program=4, line_targets=True, relabel=False,
        batch_size=32, steps=8_000, lr=3e-3, warmup_steps=200, decay_steps=2_000, weight_decay=0.0, beta2=0.98,
        n_eval=256, n_systematic_test=1_600, eval_every=250, checkpoint_every=500, longer_seq_len=[12],
        loss_on="answer",
    ),
    # The earlier cpu preset (4 layers, d 128, answer loss only, no convolution). Measured
    # (docs/RESULTS.md): one hour (17k steps) stays in the heuristic phase (test 0.41).
    "cpu_plain": dict(
        model="llama", n_layers=4, n_heads=4, d_model=128, d_ff=512, activation="gelu", dropout=0.0,
        seq_len=8, hops=[1, 2, 3, 4], spacing="compact", train_programs=None, heldout_fraction=0.1,
        batch_size=64, steps=10_000, lr=1e-3, warmup_steps=300, weight_decay=0.01,
        n_eval=256, eval_every=250, checkpoint_every=1_000, longer_seq_len=[12], loss_on="answer",
    ),
}

# Settings that may differ between a killed run and its resumption (they do not change training).
RESUME_FREE = frozenset({
    "resume", "stop_after", "checkpoint_dir", "wandb_mode", "project", "entity", "group", "tags", "run_name",
    "output_dir", "progress", "log_artifacts", "keep_checkpoints", "device", "eval_every", "eval_batch_size",
    "log_every", "preset", "stop_when_systematic", "overwrite_checkpoints",
})


class TrainSettings(WandbGroup, DeviceGroup):
    """`scripts/train.py`: train a transformer from scratch on a task's programs."""

    task: ClassVar[str] = DEFAULT_TASK  # the task trained on (the only one with training support for now)

    preset: Literal["paper", "cpu", "cpu_plain"] | None = Field(None, description="fills the settings not given explicitly")

    # architecture (`model` names the family: the trained model is a new model of that family)
    model: Literal["llama", "gpt2"] = Field(
        "llama", description="llama: RoPE, RMSNorm, gated MLP; gpt2: learned positions, LayerNorm, GELU")
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    d_model: int = Field(128, ge=1)
    d_ff: int = Field(512, ge=1)
    activation: Literal["gelu", "silu"] = "gelu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0, allow_inf_nan=False)
    max_positions: int = Field(512, ge=8, description="longest token sequence the model accepts")
    conv_kernel: int = Field(0, ge=0, le=64, description=(
        "llama only: width of a causal depthwise convolution before each attention block (0: none, plain Llama)"))
    init_from: str | None = Field(None, description=(
        "start from this checkpoint folder's weights (same architecture; a fresh optimizer and schedule), "
        "e.g. to fine-tune a trained model on another supervision"))

    # data
    seq_len: int = Field(8, ge=1, description="assignment lines per training program (plus the query line)")
    hops: list[int] = Field([1, 2, 3, 4], description="chain lengths trained on, balanced")
    distractor_chains: int | None = None
    max_distractor_depth: int = Field(3, ge=1)
    spacing: Literal["spaced", "compact"] = "compact"
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="(letter, digit) pairs never assigned in training")
    train_programs: int | None = Field(None, ge=1, description="finite pool visited once per epoch; None: fresh programs")
    data_seed: int = Field(0, description="programs, held-out pairs and evaluation sets")
    n_eval: int = Field(256, ge=1, description="programs in each evaluation set")
    longer_seq_len: list[int] = Field([], description="generalisation sets of longer programs")
    loss_on: Literal["answer", "all"] = Field(
        "answer", description="answer: loss on the supervised targets (the answer digit and what the supervision adds); "
                              "all: on every token")
    queries_per_program: int = Field(1, ge=1, le=26, description=(
        "supervised queries per training program: its own, then N-1 about other variables (`#x: d` lines)"))
    line_targets: bool = Field(False, description="also predict each line's value at the newline that ends it")
    relabel: bool = Field(False, description="rename letters and digits by a random permutation per training program")
    n_systematic_test: int = Field(0, ge=0, description=(
        "an extra test set of heuristic-wrong programs (hops balanced), scored at the end as `systematic/`"))

    # optimisation
    seed: int = Field(0, description="initial weights, dropout")
    batch_size: int = Field(64, ge=1)
    progress: bool = True
    steps: int = Field(1000, ge=1)
    lr: float = Field(1e-3, gt=0.0, allow_inf_nan=False)
    warmup_steps: int = Field(100, ge=0)
    decay_steps: int | None = Field(None, ge=1, description=(
        "linear decay to 0 over the last N steps, constant before (None: decay over every step after warmup)"))
    weight_decay: float = Field(0.01, ge=0.0, allow_inf_nan=False)
    beta1: float = Field(0.9, ge=0.0, lt=1.0, allow_inf_nan=False, description="AdamW's first-moment decay, in [0, 1)")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, allow_inf_nan=False, description="AdamW's second-moment decay, in [0, 1)")
    grad_clip: float | None = Field(1.0, gt=0.0, allow_inf_nan=False)

    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")

    # evaluation, checkpoints, resumption
    eval_every: int = Field(100, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept on disk (the best is always kept)")
    checkpoint_dir: str | None = Field(
        None, description="None: <output_dir>/checkpoints/<run>; {name} placeholders take settings, e.g. ckpt/seed{seed}")
    resume: bool = Field(False, description="continue from the latest checkpoint in checkpoint_dir, if any")
    overwrite_checkpoints: bool = Field(False, description=(
        "start afresh in a checkpoint_dir that holds another run's checkpoints, deleting them (else refused)"))
    stop_when_systematic: bool = Field(False, description=(
        "end (with a checkpoint) at the first evaluation whose validation heuristic-wrong accuracy passes 0.99"))
    stop_after: int | None = Field(None, ge=1, description="end after this many steps without saving (simulates a kill)")
    log_artifacts: bool = Field(True, description="checkpoints as W&B model artifacts (latest, best, step-N)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("preset")
        if name in (None, "None"):
            return data
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
        return {**PRESETS[name], **data}

    @field_validator("hops")
    @classmethod
    def _hops_in_range(cls, hops: list[int]) -> list[int]:
        if not hops or any(not 1 <= h <= MAX_HOPS for h in hops) or len(set(hops)) != len(hops):
            raise ValueError(f"hops must be distinct values between 1 and {MAX_HOPS}, got {hops}")
        return hops

    @model_validator(mode="after")
    def _consistent(self) -> TrainSettings:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.conv_kernel and self.model != "llama":
            raise ValueError(f"conv_kernel needs model=llama (got {self.model})")
        if self.line_targets and self.loss_on == "all":
            raise ValueError("line_targets need loss_on=answer: with loss_on=all the newline already predicts the next line")
        if self.dtype == "float16":
            raise ValueError("float16 training needs loss scaling; use dtype=bfloat16 or float32")
        if self.checkpoint_dir is not None:
            try:
                self.checkpoint_path()
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(f"checkpoint_dir {self.checkpoint_dir!r} names an unknown setting: {err}") from None
        return self

    def checkpoint_path(self) -> str | None:
        """checkpoint_dir with its `{setting}` placeholders filled in (None when unset)."""
        if self.checkpoint_dir is None:
            return None
        return self.checkpoint_dir.format(**{k: v for k, v in self.__dict__.items() if k != "checkpoint_dir"})

    def training_values(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in RESUME_FREE}


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
        task=settings.task, seq_len=settings.seq_len, hops=tuple(settings.hops), data_seed=settings.data_seed,
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
    from bindexp.training.step import OptimSpec

    warmup = settings.warmup_steps if steps is None else min(settings.warmup_steps, steps)
    return OptimSpec(settings.lr, settings.weight_decay, settings.beta1, settings.beta2, warmup,
                     settings.steps if steps is None else steps, settings.grad_clip, settings.decay_steps)


def _checkpoint_to_resume(settings: TrainSettings, root: Path) -> Path | None:
    """The checkpoint a resumed run starts from (None: start afresh), every file of it checked
    (index, weights, trainer state, optimizer, RNG: a damaged one is one line naming it); refuses
    incompatible settings."""
    from bindexp.models.loading import check_model_dir

    latest = latest_checkpoint(root)
    if latest is None:
        return None
    if not (latest / TRAINER_DIR / "state.json").exists():
        raise TrainError(f"checkpoint {latest} has no {TRAINER_DIR}/state.json; it cannot be resumed")
    check_model_dir(latest)
    saved = read_trainer_files(latest)[0]["settings"]
    differing = sorted(k for k, v in settings.training_values().items() if saved.get(k) != v)
    if differing:
        key = differing[0]
        raise TrainError(f"cannot resume {latest}: {key}={saved.get(key)!r} there but {getattr(settings, key)!r} now "
                         f"({len(differing)} setting(s) differ); resume with the killed run's settings")
    return latest


def claim_checkpoints(settings: TrainSettings, root: Path) -> tuple[FolderLock, Path | None]:
    """Hold `root` for this run (a second writer is refused naming the holder), remove what a kill
    during a save left there, and say where training starts: the checkpoint to resume, or None.
    A fresh run into a folder holding checkpoints is refused unless it overwrites them explicitly."""
    name = settings.run_name or run_identity("train", settings.model_dump(mode="json")).name
    lock = FolderLock.acquire(root, "checkpoint_dir", f"train run {name!r}")
    try:
        removed = clean_staging(root)
        if removed:
            print(f"removed what a killed save left in {root}: {', '.join(removed)}", file=sys.stderr)
        if settings.resume:
            return lock, _checkpoint_to_resume(settings, root)
        held = holds_checkpoints(root)
        if held is not None and not settings.overwrite_checkpoints:
            raise TrainError(f"checkpoint_dir {root} holds another run's {held}; continue it with --resume=True, "
                             "replace them with --overwrite_checkpoints=True, or choose another checkpoint_dir")
        if held is not None:
            print(f"overwriting the checkpoints in {root}: {', '.join(clear_checkpoints(root))}", file=sys.stderr)
        return lock, None
    except BaseException:
        lock.release()
        raise


def _check(settings: TrainSettings) -> DataSpec:
    """Everything that can be refused before a checkpoint folder, a model or a W&B run exists."""
    spec = data_spec(settings)
    spec.check()
    # "a = b\n" per line, the query and answer, each extra query "\n#x: d"
    longest = max([settings.seq_len, *settings.longer_seq_len]) * 6 + 8 + 6 * (settings.queries_per_program - 1)
    if settings.model == "gpt2" and longest > settings.max_positions:
        raise TrainError(f"programs of {longest} tokens exceed max_positions={settings.max_positions}")
    if settings.resume and settings.checkpoint_dir is None:
        raise TrainError("resume=True needs checkpoint_dir (where the killed run saved its checkpoints)")
    device = resolve_device(settings.device)
    resolve_dtype(settings.dtype, device)
    if settings.init_from is not None:
        _check_init_from(settings)
    check_run_folder(settings, continues="train" if settings.resume else None)
    if settings.checkpoint_dir is not None:
        check_writable_dir(settings.checkpoint_path(), "checkpoint_dir")
        read_index(Path(settings.checkpoint_path()))  # a damaged index: one line, before anything
    return spec


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
    """Train as one W&B run (job_type `train`); every file is also written locally. The checkpoint
    folder is held for the whole run (`claim_checkpoints`); a given checkpoint_dir is claimed
    before the W&B run starts, the default one (inside output_dir, new) when the run's name is known."""
    spec = _check(settings)
    lock, resume_from = (claim_checkpoints(settings, Path(settings.checkpoint_path())) if settings.checkpoint_dir
                         else (None, None))
    try:
        with Tracker(settings, "train", continues=settings.resume) as tracker:
            label = tracker.run.id if tracker.run is not None else tracker.out_dir.name
            if lock is None:
                lock, resume_from = claim_checkpoints(settings, Path(settings.output_dir) / "checkpoints" / label)
            return _train(settings, spec, resume_from, Path(lock.path).parent, tracker)
    finally:
        if lock is not None:
            lock.release()


def _train(settings: TrainSettings, spec: DataSpec, resume_from: Path | None, root: Path,
           tracker: Tracker) -> TrainOutcome:
    import torch

    from bindexp.training.evaluation import END_SETS
    from bindexp.training.trainer import FitPlan, Trainer

    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    tracker.define_step(STEP_KEY)
    trainer = Trainer(ProgramData(spec), arch_spec(settings), optim_spec(settings), seed=settings.seed,
                      device=device, amp_dtype=resolve_dtype(settings.dtype, device), loss_on=settings.loss_on,
                      batch_size=settings.batch_size, eval_batch_size=settings.eval_batch_size,
                      init_from=Path(settings.init_from) if settings.init_from and resume_from is None else None)
    label = tracker.run.id if tracker.run is not None else tracker.out_dir.name
    artifact_name = f"model-{settings.run_name or label}"
    if resume_from is not None:
        artifact_name = trainer.resume(resume_from).get("artifact_name", artifact_name)
        print(f"resuming from {resume_from} (step {trainer.step})")
    data, plateau = trainer.data, trainer.plateau
    tracker.update_config({
        "n_params": trainer.n_params, "resumed_from_step": trainer.step or None, "checkpoint_root": str(root),
        "heuristic_plateau": plateau, "eval_sets": {k: len(v) for k, v in data.eval_sets.items()},
        "heldout_pairs": sorted("".join(p) for p in data.heldout),
    })
    history_path = tracker.folder.history
    written = {"checkpoint": resume_from}

    def record(row: dict[str, Any]) -> None:
        tracker.log(row)
        append_lines(history_path, [row])

    if resume_from is not None:  # the run's history so far, so this run's file and charts hold all of it
        restored = sorted(trainer.losses + trainer.history, key=lambda row: row[STEP_KEY])  # stable: loss first
        write_lines(history_path, restored)  # replacing what a continued run folder held past the checkpoint
        for row in restored:
            tracker.log(row)

    def checkpointed(path: Path, is_best: bool) -> None:
        written["checkpoint"] = path
        if settings.log_artifacts:
            aliases = ["latest", f"step-{trainer.step}"] + (["best"] if is_best else [])
            tracker.log_named_artifact(artifact_name, "model", [path], aliases,
                                       {"step": trainer.step, **trainer.history[-1]})

    def state() -> dict[str, Any]:
        return {"settings": settings.model_dump(mode="json"), "history": trainer.history, "losses": trainer.losses,
                "best_metric": trainer.best, "artifact_name": artifact_name, "heuristic_plateau": plateau,
                "run_folder": str(tracker.out_dir.resolve())}

    plan = FitPlan(settings.log_every, settings.eval_every, settings.checkpoint_every, root, settings.keep_checkpoints,
                   settings.stop_when_systematic, settings.stop_after, settings.progress)
    stopped = trainer.fit(settings.steps, plan, on_row=record, on_checkpoint=checkpointed, state=state)
    history, done = trainer.history, trainer.step
    summary = _summary(settings, history, plateau, done, stopped, root, trainer.n_params)
    if not stopped:
        summary.update(trainer.evaluate(names=[n for n in END_SETS if n in data.eval_sets], intervals=True))
        summary.update({k: v for k, v in history[-1].items() if k != STEP_KEY} if history else {})
    tracker.write_json(SUMMARY_FILE, summary)
    tracker.set_summary(summary)
    if history:
        save_training_plot(tracker, history + trainer.losses, plateau, summary, settings)
    print(_describe(summary))
    return TrainOutcome(summary, history, tracker.out_dir, root, written["checkpoint"], tracker.run_dir)


def save_training_plot(tracker: Tracker, history: list[dict], plateau: float, summary: dict[str, Any],
                       settings: TrainSettings) -> None:
    """The run's history (across resumptions) as `training.png` in its folder, and as a W&B image."""
    boundaries = {key: summary[key] for key in PHASE_KEYS}
    conv = f" conv {settings.conv_kernel}" if settings.conv_kernel else ""
    supervision = (f"; {settings.queries_per_program} queries" if settings.queries_per_program > 1 else "") + \
        ("; line targets" if settings.line_targets else "")
    title = (f"{settings.model} {settings.n_layers}L d{settings.d_model}{conv} ({summary['n_params'] / 1e6:.2f}M params), "
             f"{settings.seq_len}-line programs, hops {settings.hops}{supervision}; {settings.n_eval} programs per set")
    write_figure(plot_training(history, plateau, boundaries, title), tracker.folder.training_plot, dpi=110)
    tracker.log_image("training", tracker.folder.training_plot)


def _summary(settings: TrainSettings, history: list[dict], plateau: float, done: int, stopped: bool,
             root: Path, n_params: int) -> dict[str, Any]:
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
