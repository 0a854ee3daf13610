"""One optimisation step at a time: batches, the loss, AdamW with warmup and a linear schedule.

The loss is cross-entropy either on each example's targets (`answer`: the program's answer digit,
what the paper trains on, plus any extra queries' answers and line targets its supervision adds;
see `bindexp.training.data.Supervision`) or next-token on every token after BOS (`all`). On CUDA
the forward runs under bf16 autocast with float32 weights and optimizer state.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import torch

from bindexp.training.data import TrainingExample

IGNORE = -100
LossOn = Literal["answer", "all"]


@dataclasses.dataclass(frozen=True)
class OptimSpec:
    lr: float = 1e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 100
    steps: int = 1000
    grad_clip: float | None = 1.0
    decay_steps: int | None = None  # None: decay over every step after warmup


def lr_factor(step: int, warmup: int, total: int, decay: int | None = None) -> float:
    """Linear warmup from 0 to 1 over `warmup` steps, constant, then linear decay to 0 at `total`
    over its last `decay` steps (None: decay from the end of warmup)."""
    if step < warmup:
        return (step + 1) / warmup
    span = total - warmup if decay is None else min(decay, total - warmup)
    return max(0.0, min(1.0, (total - step) / max(1, span)))


def make_optimizer(model: Any, spec: OptimSpec) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (no weight decay on biases, norms and embeddings' 1-d tensors) and its schedule."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=spec.lr, betas=(spec.beta1, spec.beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, spec.warmup_steps, spec.steps, spec.decay_steps))
    return optimizer, scheduler


@dataclasses.dataclass
class Batch:
    input_ids: torch.Tensor  # [batch, length], right-padded
    labels: torch.Tensor  # [batch, length - 1]: the token each position predicts, IGNORE where no loss

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.numel())


def make_batch(tokenizer: Any, examples: Sequence[TrainingExample], loss_on: LossOn, device: torch.device) -> Batch:
    """Tokenize `examples` into inputs and labels: with `answer`, each example's targets at the
    token of the character that predicts them; with `all`, every next token."""
    encoded = tokenizer([e.text for e in examples], padding=True, return_tensors="pt", return_offsets_mapping=True)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    if loss_on == "all":
        labels = ids[:, 1:].clone()
        labels[mask[:, 1:] == 0] = IGNORE
        return Batch(ids.to(device), labels.to(device))
    labels = torch.full((len(examples), ids.shape[1] - 1), IGNORE, dtype=ids.dtype)
    for row, (example, offsets) in enumerate(zip(examples, encoded["offset_mapping"].tolist())):
        token_of = {end - 1: j for j, (start, end) in enumerate(offsets) if end > start}
        for char, target in example.targets:
            labels[row, token_of[char]] = _single_token(tokenizer, target)
    return Batch(ids.to(device), labels.to(device))


def _single_token(tokenizer: Any, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"target {text!r} is {len(ids)} tokens; training targets must be one token each")
    return ids[0]


def autocast_for(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast when asked for a reduced dtype; nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def batch_loss(model: Any, batch: Batch, amp_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    with autocast_for(batch.input_ids.device, amp_dtype):
        logits = model(input_ids=batch.input_ids).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), batch.labels.reshape(-1), ignore_index=IGNORE)


def train_step(model: Any, batch: Batch, optimizer: torch.optim.Optimizer, scheduler: Any, spec: OptimSpec,
               amp_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One forward, backward and update; returns the batch loss (a detached scalar tensor, so the
    caller decides when to wait for the device)."""
    model.train()
    loss = batch_loss(model, batch, amp_dtype)
    loss.backward()
    if spec.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()

