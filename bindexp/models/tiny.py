"""Tiny random models with a character-level tokenizer, built offline from a config.

They stand in for real models in tests: same code paths (HF classes, nnsight, KV caches,
grouped-query attention), weights fixed by a seed, forward passes in milliseconds.
"""

from __future__ import annotations

import string

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen3Config

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of `ALPHABET`, a BOS token prepended, offsets kept."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + list(ALPHABET))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(family: str, vocab_size: int):
    """Llama, Qwen3 or bindexp's conv Llama (`conv`, kernel 4) shapes shrunk to 4 layers of width 64,
    with grouped-query attention."""
    shared = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    if family == "llama":
        return LlamaConfig(**shared)
    if family == "qwen3":
        return Qwen3Config(head_dim=16, **shared)
    if family == "conv":
        from bindexp.models.conv_llama import ConvLlamaConfig

        return ConvLlamaConfig(conv_kernel=4, **shared)
    raise ValueError(f"no tiny config for family {family!r}")


def tiny_random_model(family: str, seed: int = 0):
    """(model, tokenizer) with weights drawn from `seed`; identical for the same seed."""
    tokenizer = char_tokenizer()
    config = tiny_config(family, len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    return model, tokenizer
