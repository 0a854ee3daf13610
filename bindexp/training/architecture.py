"""Models trained from scratch: a transformers config and a character tokenizer.

The result is an ordinary Hugging Face causal LM, so `bindexp.models.load_model(<checkpoint dir>)`
and every analysis (scoring, patching, sites) work on it unchanged.

- `llama`: RoPE, RMSNorm, a gated MLP (GELU or SiLU), no biases; attention dropout only.
  The paper's GPT-2-style model with RoPE is approximated by this family. With `conv_kernel=K > 0`
  it is bindexp's `ConvLlamaForCausalLM` (`bindexp.models.conv_llama`): the same model with a width-K
  causal depthwise convolution on each attention block's normalised input.
- `gpt2`: GPT-2 itself: LayerNorm, GELU, learned absolute positions (no RoPE), dropout on
  embeddings, residuals and attention.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from bindexp.models.tiny import char_tokenizer

Arch = Literal["llama", "gpt2"]


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    arch: Arch = "llama"
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    d_ff: int = 512
    activation: Literal["gelu", "silu"] = "gelu"
    dropout: float = 0.0
    max_positions: int = 512
    conv_kernel: int = 0  # llama only: 0 is transformers' LlamaForCausalLM itself


def program_tokenizer():
    """One token per character (letters, digits, punctuation, space, newline) and a BOS token:
    every program character and every answer digit is its own token. Saved with the model as a
    PreTrainedTokenizerFast (tokenizer.json)."""
    return char_tokenizer()


def model_config(spec: ArchSpec, tokenizer: Any):
    """A transformers config for `spec` over `tokenizer`'s vocabulary."""
    from transformers import GPT2Config, LlamaConfig

    if spec.d_model % spec.n_heads:
        raise ValueError(f"d_model {spec.d_model} is not divisible by n_heads {spec.n_heads}")
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    if spec.conv_kernel and spec.arch != "llama":
        raise ValueError(f"conv_kernel needs the llama family, not {spec.arch}")
    if spec.arch == "llama":
        llama = dict(
            vocab_size=len(tokenizer), hidden_size=spec.d_model, intermediate_size=spec.d_ff,
            num_hidden_layers=spec.n_layers, num_attention_heads=spec.n_heads, num_key_value_heads=spec.n_heads,
            hidden_act=spec.activation, max_position_embeddings=spec.max_positions,
            attention_dropout=spec.dropout, tie_word_embeddings=False, **ids,
        )
        if spec.conv_kernel:
            from bindexp.models.conv_llama import ConvLlamaConfig

            return ConvLlamaConfig(conv_kernel=spec.conv_kernel, **llama)
        return LlamaConfig(**llama)
    if spec.arch == "gpt2":
        return GPT2Config(
            vocab_size=len(tokenizer), n_positions=spec.max_positions, n_embd=spec.d_model, n_layer=spec.n_layers,
            n_head=spec.n_heads, n_inner=spec.d_ff,
            activation_function="gelu_new" if spec.activation == "gelu" else "silu",
            resid_pdrop=spec.dropout, embd_pdrop=spec.dropout, attn_pdrop=spec.dropout, tie_word_embeddings=False,
            **ids,
        )
    raise ValueError(f"unknown architecture {spec.arch!r}; use llama or gpt2")


def new_model(spec: ArchSpec, tokenizer: Any, seed: int):
    """A freshly initialised float32 model; the same seed gives the same weights."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(model_config(spec, tokenizer), dtype=torch.float32)


def n_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
