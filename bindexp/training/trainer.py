"""The training loop as an object: a `Trainer` holds the model, its optimizer and schedule, the
data and where it is, and `fit`s, `evaluate`s and `save`s.

    trainer = Trainer(data, arch, optim, seed=0, device=device, amp_dtype=torch.float32, loss_on="answer",
                      batch_size=64, eval_batch_size=256)
    trainer.resume(checkpoint)                           # optional: weights, optimizer, schedule, RNG, history
    stop = trainer.fit(steps, plan, on_row=..., on_checkpoint=...)
    trainer.evaluate(names=["test"], intervals=True)

What a run records (W&B, history files) it learns from the callbacks; the trainer writes nothing
but its checkpoints, through `bindexp.io.checkpoints`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bindexp.errors import BindexpError, ModelError
from bindexp.io.checkpoints import (
    latest_checkpoint,
    load_weights,
    read_trainer_files,
    record_checkpoint,
    write_checkpoint,
)
from bindexp.training.architecture import ArchSpec, n_parameters, new_model, program_tokenizer
from bindexp.training.data import ProgramData
from bindexp.training.evaluation import evaluate_sets, heuristic_plateau, is_systematic
from bindexp.training.state import load_optimizer, optimizer_tensors, restore_rng, rng_tensors
from bindexp.training.step import LossOn, OptimSpec, make_batch, make_optimizer, train_step
from bindexp.vocab import STEP_KEY


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """When to log the loss, evaluate and checkpoint, and when to stop early."""

    log_every: int
    eval_every: int
    checkpoint_every: int
    checkpoint_root: Path
    keep_checkpoints: int
    stop_when_systematic: bool = False
    stop_after: int | None = None
    progress: bool = False


class Trainer:
    """A model trained from scratch on `data` (see the module docstring)."""

    def __init__(self, data: ProgramData, arch: ArchSpec, optim: OptimSpec, *, seed: int, device: torch.device,
                 amp_dtype: torch.dtype, loss_on: LossOn, batch_size: int, eval_batch_size: int,
                 init_from: Path | None = None):
        self.data, self.optim, self.device, self.amp_dtype = data, optim, device, amp_dtype
        self.loss_on, self.batch_size, self.eval_batch_size = loss_on, batch_size, eval_batch_size
        self.tokenizer = program_tokenizer()
        try:
            self.model = new_model(arch, self.tokenizer, seed).to(device)
        except ValueError as err:
            raise ModelError(f"cannot build the model: {err}") from None
        if init_from is not None:
            load_weights(self.model, init_from)
        self.optimizer, self.scheduler = make_optimizer(self.model, optim)
        torch.manual_seed(seed)  # the dropout stream; restored exactly on resume
        self.step = 0
        self.history: list[dict[str, Any]] = []  # evaluations
        self.losses: list[dict[str, Any]] = []  # training loss rows
        self.best: float | None = None  # best validation accuracy at a checkpoint
        self.state: dict[str, Any] = {}  # what a resumed checkpoint said about itself
        self.plateau = heuristic_plateau(data.eval_sets["validation"])

    @property
    def n_params(self) -> int:
        return n_parameters(self.model)

    def resume(self, checkpoint: Path) -> dict[str, Any]:
        """Continue from `checkpoint`: weights, optimizer, schedule, RNG, step, history; returns its state."""
        load_weights(self.model, checkpoint)
        state, optimizer_state, rng_state = read_trainer_files(checkpoint)
        try:
            load_optimizer(self.optimizer, optimizer_state, state["optimizer_param_groups"])
            self.scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(self.optimizer.param_groups)})
            restore_rng(rng_state)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelError(f"{checkpoint}: its trainer state (optimizer, schedule, RNG) does not fit this "
                             f"model and settings: {first}") from None
        self.step, self.history, self.best = state["step"], state["history"], state.get("best_metric")
        self.losses = state.get("losses", [])
        self.state = state
        return state

    def evaluate(self, names: Sequence[str] | None = None, intervals: bool = False) -> dict[str, float]:
        """Metrics on the named evaluation sets (default: all but the end sets), RNG left as it was."""
        return evaluate_sets(self.model, self.tokenizer, self.data.eval_sets, self.eval_batch_size, names=names,
                             intervals=intervals)

    def save(self, root: Path, state: dict[str, Any], *, is_best: bool, metric: float, keep: int) -> Path:
        """Checkpoint the current step under `root` (model, tokenizer, optimizer, schedule, RNG and
        `state`: what the run records, its settings and this trainer's history) and make it the
        latest (and the best, if `is_best`)."""
        tensors, groups = optimizer_tensors(self.optimizer)
        scheduler = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
        path = write_checkpoint(root, self.step, self.model, self.tokenizer, tensors, rng_tensors(), {
            **state, "step": self.step, "optimizer_param_groups": groups, "scheduler": scheduler})
        record_checkpoint(root, self.step, best=is_best, metric=metric, keep=keep)
        return path

    def fit(self, steps: int, plan: FitPlan, *, on_row: Callable[[dict[str, Any]], None],
            on_checkpoint: Callable[[Path, bool], None], state: Callable[[], dict[str, Any]]) -> bool:
        """Train from the current step to `steps`; returns whether it stopped early without saving
        (`stop_after`). `on_row` gets every loss and evaluation row, `on_checkpoint` every checkpoint
        written (its folder and whether it is the best so far); `state()` what a checkpoint records
        about the run besides the trainer's own state."""
        from tqdm.auto import tqdm

        if plan.stop_when_systematic and self.history and self.history[-1][STEP_KEY] == self.step \
                and is_systematic(self.history[-1]):
            return False  # a resumed run that had stopped here, systematic: it is finished, not continued
        loss_sum, loss_n = torch.zeros((), device=self.device), 0
        bar = tqdm(total=steps, initial=self.step, disable=not plan.progress, desc="training", unit="step")
        solved, stopped = False, False
        for step in range(self.step, steps):
            batch = make_batch(self.tokenizer, self.data.train_examples(step, self.batch_size), self.loss_on,
                               self.device)
            loss_sum += train_step(self.model, batch, self.optimizer, self.scheduler, self.optim, self.amp_dtype)
            loss_n += 1
            self.step = done = step + 1
            bar.update(1)
            if done % plan.log_every == 0 or done == steps:
                loss = float(loss_sum) / loss_n  # (the one GPU sync per log row)
                self._check_finite(done, plan, {"the training loss": loss})
                self.losses.append({STEP_KEY: done, "train/loss": loss,
                                    "train/lr": self.scheduler.get_last_lr()[0], "train/tokens": done * batch.n_tokens})
                on_row(self.losses[-1])
                loss_sum.zero_()
                loss_n = 0
            at_checkpoint = done % plan.checkpoint_every == 0 or done == steps
            if done % plan.eval_every == 0 or at_checkpoint:
                row = {STEP_KEY: done, **self.evaluate()}
                self._check_finite(done, plan, {key: value for key, value in row.items() if key.endswith("/loss")})
                self.history.append(row)
                on_row(row)
                bar.set_postfix(accuracy=f"{row['validation/accuracy']:.3f}")
                solved = plan.stop_when_systematic and is_systematic(row)
            if at_checkpoint or solved:
                self._check_finite(done, plan, {"the training loss": float(loss_sum)}, weights=True)
                metric = self.history[-1]["validation/accuracy"]
                is_best = self.best is None or metric > self.best
                self.best = metric if is_best else self.best
                on_checkpoint(self.save(plan.checkpoint_root, state(), is_best=is_best, metric=metric,
                                        keep=plan.keep_checkpoints), is_best)
            if solved:
                print(f"systematic at step {done}: stopping (stop_when_systematic=True)")
                break
            if plan.stop_after is not None and done >= plan.stop_after and done < steps:
                stopped = True
                print(f"stopped after step {done} without saving (stop_after={plan.stop_after})")
                break
        bar.close()
        return stopped

    def _check_finite(self, step: int, plan: FitPlan, values: dict[str, float], weights: bool = False) -> None:
        """Raise TrainingDiverged when a value (a loss) or, with `weights`, any parameter is not finite:
        nothing of this step is recorded or saved, the last good checkpoint stays the latest."""
        bad = next((f"{name} is {value}" for name, value in values.items() if not math.isfinite(value)), None)
        if bad is None and weights:
            finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()
            bad = None if bool(finite) else "a weight is not finite"
        if bad is not None:
            latest = latest_checkpoint(plan.checkpoint_root)
            kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written"
            raise TrainingDiverged(f"training diverged at step {step}: {bad} (lr={self.optim.lr:g}); {kept}")


class TrainingDiverged(BindexpError):
    """The loss or a weight became NaN or infinite (a learning rate too high, ...); one line."""
