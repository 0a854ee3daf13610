"""Batched forward passes that do no work twice.

Prompts in a run share a long token prefix (the few-shot examples). Its keys and values are
computed once (`SharedPrefix`) and reused by every batch; each batch then runs only its own
suffix tokens, right-padded. Right padding is exact under causal attention: a real token never
attends to the padding after it, and positions are simply prefix length + index, so a batch
gives the same numbers as one prompt at a time (up to float rounding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import DynamicCache

from bindexp.errors import ModelError


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Token ids and character offsets of one prompt (special tokens included)."""

    ids: list[int]
    offsets: list[tuple[int, int]]


def encode(tokenizer: Any, prompts: Sequence[str]) -> list[Encoded]:
    batch = tokenizer(list(prompts), return_offsets_mapping=True, add_special_tokens=True)
    return [
        Encoded(list(ids), [tuple(o) for o in offsets])
        for ids, offsets in zip(batch["input_ids"], batch["offset_mapping"])
    ]


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens shared by all sequences, leaving at least one token of each to run."""
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    n = 0
    while n < shortest - 1 and all(s[n] == first[n] for s in sequences):
        n += 1
    return n


class SharedPrefix:
    """The key/value cache of a token prefix, computed once and reused by every batch."""

    def __init__(self, model: Any, prefix_ids: Sequence[int]):
        self.model = model
        self.length = len(prefix_ids)
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self.length:
            ids = torch.tensor([list(prefix_ids)], device=_device(model))
            with torch.inference_mode():
                out = model(input_ids=ids, use_cache=True)
            self.layers = [(keys, values) for keys, values, *_ in out.past_key_values]

    def cache_for(self, batch_size: int) -> DynamicCache | None:
        """A fresh cache holding the prefix for `batch_size` rows (views, no copies)."""
        if not self.length:
            return None
        data = [(k.expand(batch_size, *k.shape[1:]), v.expand(batch_size, *v.shape[1:])) for k, v in self.layers]
        return new_cache(data, self.model.config)


def new_cache(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], config: Any) -> DynamicCache:
    """A cache holding `layers` (keys, values). A model with more cache layers than decoder layers
    (a convolution's inputs, `bindexp.models.conv_llama`) gets one cache layer per entry; any other
    model gets the layer types its config declares (sliding windows ...)."""
    if len(layers) != config.get_text_config(decoder=True).num_hidden_layers:
        return DynamicCache(layers)
    return DynamicCache(layers, config=config)


@dataclasses.dataclass
class Batch:
    """Suffix tokens of a few prompts, right-padded, and where each prompt's last token is."""

    indices: list[int]  # positions of these prompts in the caller's list
    input_ids: torch.Tensor  # [batch, max suffix length]
    last: torch.Tensor  # [batch] index of each prompt's final token within the suffix


def batches(
    sequences: Sequence[Sequence[int]], start: int, batch_size: int, pad_id: int, device: torch.device
) -> Iterator[Batch]:
    """Yield batches of `sequences[i][start:]`, grouped by length so little padding is run."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for at in range(0, len(order), batch_size):
        chunk = order[at : at + batch_size]
        suffixes = [list(sequences[i][start:]) for i in chunk]
        width = max(len(s) for s in suffixes)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            ids[row, : len(suffix)] = torch.tensor(suffix)
        last = torch.tensor([len(s) - 1 for s in suffixes])
        yield Batch(chunk, ids.to(device), last.to(device))


def batch_forward(model: Any, batch: Batch, prefix: SharedPrefix | None):
    """Run one batch after the shared prefix; only each row's final position gets logits."""
    start = prefix.length if prefix else 0
    positions = torch.arange(start, start + batch.input_ids.shape[1], device=batch.input_ids.device)
    out = model(
        input_ids=batch.input_ids,
        position_ids=positions.expand(batch.input_ids.shape[0], -1),
        past_key_values=prefix.cache_for(batch.input_ids.shape[0]) if prefix else None,
        use_cache=prefix is not None,
        logits_to_keep=batch.last[:, None],
    )
    if out.logits.shape[:2] != (batch.input_ids.shape[0], 1):  # per-row positions arrived in transformers 5.23
        raise ModelError(f"this transformers version ignores per-row logits_to_keep (logits {tuple(out.logits.shape)});"
                         " install the pinned transformers==5.23.0")
    return out


def pad_id_of(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def final_logits(
    model: Any,
    tokenizer: Any,
    sequences: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    reuse_prefix: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Logits at the final token of each sequence, [n, vocab] float32, in the input order."""
    from tqdm.auto import tqdm

    start = common_prefix_length(sequences) if reuse_prefix else 0
    prefix = SharedPrefix(model, sequences[0][:start]) if start else None
    out: torch.Tensor | None = None
    bar = tqdm(total=len(sequences), disable=not progress, desc="scoring", unit="prompt")
    for batch in batches(sequences, start, batch_size, pad_id_of(tokenizer), _device(model)):
        with torch.inference_mode():
            logits = batch_forward(model, batch, prefix).logits[:, -1, :].float()
        if out is None:
            out = torch.empty(len(sequences), logits.shape[-1])
        out[batch.indices] = logits.cpu()
        bar.update(len(batch.indices))
    bar.close()
    return out if out is not None else torch.empty(0, 0)
