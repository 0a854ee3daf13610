"""A Llama model with a short causal convolution before each attention block (bindexp's own class).

    h = RMSNorm(x);  h = h + conv(h);  x = x + Attention(h);  x = x + MLP(RMSNorm(x))

`conv` is depthwise and causal, of width `conv_kernel`: position t sees the normalised inputs of
positions t-K+1..t. It lets a token read its few predecessors without first learning a
previous-token head (the "Canon layer" idea, Allen-Zhu 2025), which is what makes the binding task
learnable by a 4-layer, d 64 model on a CPU (docs/RESULTS.md). Everything else is transformers'
Llama: attention, RoPE, MLP and norms are Llama's own modules, so with `conv_kernel=0` the model
computes exactly what `LlamaForCausalLM` computes with the same weights.

The class registers itself with transformers' Auto classes when this module is imported
(`model_type = "bindexp_conv_llama"`), so `AutoModelForCausalLM.from_pretrained(<folder>)` loads a
checkpoint with no `trust_remote_code`; `bindexp.models.loading` imports it before loading.

Key/value caches: the convolution needs the normalised inputs of the K-1 positions before the
first one it runs. They live in the same `DynamicCache` as keys and values, as extra layers
`n_layers + i` (keys: [batch, 1, T, d], values: [batch, 1, T, 0]), so cropping a cache to its
first s positions, stacking rows or expanding a shared prefix treats them exactly like the keys
(`bindexp.models.forward.new_cache` builds such a cache without the config's layer list).
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
)

MODEL_TYPE = "bindexp_conv_llama"


@strict
class ConvLlamaConfig(LlamaConfig):
    """LlamaConfig plus `conv_kernel` (0: no convolution, the plain Llama computation)."""

    model_type = MODEL_TYPE
    conv_kernel: int = 4

    def validate_architecture(self):
        super().validate_architecture()
        if self.conv_kernel < 0:
            raise ValueError(f"conv_kernel must be >= 0, got {self.conv_kernel}")


class CausalDepthwiseConv(nn.Module):
    """y[t] = bias + sum_j weight[:, j] * x[t - (K-1) + j], per channel; x before position 0 is 0.

    Its output is the `conv_out` site: what the layer adds to the normalised input."""

    def __init__(self, width: int, kernel: int, cache_index: int):
        super().__init__()
        self.kernel = kernel
        self.cache_index = cache_index  # where this layer's inputs live in a DynamicCache
        self.conv = nn.Conv1d(width, width, kernel, groups=width, bias=True)

    def forward(self, x: torch.Tensor, past_key_values: DynamicCache | None = None) -> torch.Tensor:
        n = x.shape[1]
        context = x
        if past_key_values is not None:
            history, _ = past_key_values.update(x[:, None], x.new_zeros(x.shape[0], 1, n, 0), self.cache_index)
            context = history[:, 0, -(n + self.kernel - 1):]
        padded = nn.functional.pad(context.transpose(1, 2), (n + self.kernel - 1 - context.shape[1], 0))
        return self.conv(padded).transpose(1, 2)


class ConvLlamaDecoderLayer(LlamaDecoderLayer):
    def __init__(self, config: ConvLlamaConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.conv = (CausalDepthwiseConv(config.hidden_size, config.conv_kernel, config.num_hidden_layers + layer_idx)
                     if config.conv_kernel else None)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=False, position_embeddings=None, **kwargs):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        if self.conv is not None:
            hidden_states = hidden_states + self.conv(hidden_states, past_key_values)
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, use_cache=use_cache, position_embeddings=position_embeddings, **kwargs)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states


class ConvLlamaPreTrainedModel(LlamaPreTrainedModel):
    config_class = ConvLlamaConfig
    config: ConvLlamaConfig
    _no_split_modules = ["ConvLlamaDecoderLayer"]
    _can_compile_fullgraph = False
    _can_record_outputs = {**LlamaPreTrainedModel._can_record_outputs, "hidden_states": ConvLlamaDecoderLayer}


class ConvLlamaModel(ConvLlamaPreTrainedModel, LlamaModel):
    def __init__(self, config: ConvLlamaConfig):
        super().__init__(config)
        self.layers = nn.ModuleList([ConvLlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, **kwargs):
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None and self.config.conv_kernel:
            past_key_values = DynamicCache()  # one layer per update index: the conv inputs fit beside the keys
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                               **kwargs)


class ConvLlamaForCausalLM(ConvLlamaPreTrainedModel, LlamaForCausalLM):
    def __init__(self, config: ConvLlamaConfig):
        super().__init__(config)
        self.model = ConvLlamaModel(config)
        self.post_init()


AutoConfig.register(MODEL_TYPE, ConvLlamaConfig, exist_ok=True)
AutoModelForCausalLM.register(ConvLlamaConfig, ConvLlamaForCausalLM, exist_ok=True)
