"""One optimisation step at a time: batches, the loss, AdamW with warmup and linear decay.

The loss is next-token cross-entropy either on the answer digit only (`answer`, what the paper
trains on) or on every token after BOS (`all`). On CUDA the forward runs under bf16 autocast
with float32 weights and optimizer state.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Literal, Sequence

import torch

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


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup from 0 to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def make_optimizer(model: Any, spec: OptimSpec) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (no weight decay on biases, norms and embeddings' 1-d tensors) and its schedule."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=spec.lr, betas=(spec.beta1, spec.beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, spec.warmup_steps, spec.steps))
    return optimizer, scheduler


@dataclasses.dataclass
class Batch:
    input_ids: torch.Tensor  # [batch, length], right-padded
    labels: torch.Tensor  # [batch, length - 1]: the token each position predicts, IGNORE where no loss

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.numel())


def make_batch(tokenizer: Any, texts: Sequence[str], loss_on: LossOn, device: torch.device) -> Batch:
    """Tokenize `texts` (each a program followed by its answer) into inputs and shifted labels."""
    encoded = tokenizer(list(texts), padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    labels = ids[:, 1:].clone()
    labels[mask[:, 1:] == 0] = IGNORE
    if loss_on == "answer":
        last = mask.sum(dim=1) - 2  # the position whose next token is the answer digit
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[torch.arange(len(texts)), last] = True
        labels[~keep] = IGNORE
    return Batch(ids.to(device), labels.to(device))


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
