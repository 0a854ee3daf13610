"""bindexp's conv Llama: checked against a plain torch re-implementation and against Llama itself."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from bindexp.models import load_model
from bindexp.models.conv_llama import ConvLlamaConfig, ConvLlamaForCausalLM
from bindexp.models.forward import new_cache

SHAPES = dict(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, hidden_act="gelu", tie_word_embeddings=False, max_position_embeddings=128)


def _conv_model(kernel: int, seed: int = 0) -> ConvLlamaForCausalLM:
    torch.manual_seed(seed)
    model = ConvLlamaForCausalLM(ConvLlamaConfig(conv_kernel=kernel, **SHAPES)).eval()
    with torch.no_grad():  # random conv weights and norm scales, so every part matters
        for layer in model.model.layers:
            if layer.conv is not None:
                layer.conv.conv.weight.normal_(0, 0.5)
                layer.conv.conv.bias.normal_(0, 0.1)
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
    return model


def _rms(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x, positions, theta):
    """Llama's rotary embedding (rotate-half convention) on [heads, T, head_dim]."""
    dim = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = positions[:, None].float() * inv[None]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    rotated = torch.cat([-x[..., dim // 2:], x[..., : dim // 2]], -1)
    return x * cos + rotated * sin


def _reference_logits(model: ConvLlamaForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    """The conv Llama written out in plain torch from its weights (one sequence, no cache)."""
    config = model.config
    n_heads, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // n_heads
    theta = config.rope_parameters["rope_theta"]
    positions = torch.arange(len(ids))
    x = model.model.embed_tokens.weight[ids]
    for layer in model.model.layers:
        h = _rms(x, layer.input_layernorm.weight, config.rms_norm_eps)
        if layer.conv is not None:
            weight, bias, k = layer.conv.conv.weight[:, 0], layer.conv.conv.bias, config.conv_kernel
            padded = torch.cat([torch.zeros(k - 1, h.shape[1]), h])
            h = h + torch.stack([bias + (weight * padded[t:t + k].T).sum(-1) for t in range(len(ids))])
        attn = layer.self_attn
        q = (h @ attn.q_proj.weight.T).view(len(ids), n_heads, head_dim).transpose(0, 1)
        kk = (h @ attn.k_proj.weight.T).view(len(ids), n_kv, head_dim).transpose(0, 1)
        v = (h @ attn.v_proj.weight.T).view(len(ids), n_kv, head_dim).transpose(0, 1)
        q, kk = _rope(q, positions, theta), _rope(kk, positions, theta)
        kk, v = kk.repeat_interleave(n_heads // n_kv, 0), v.repeat_interleave(n_heads // n_kv, 0)
        scores = q @ kk.transpose(1, 2) / math.sqrt(head_dim)
        scores = scores.masked_fill(torch.triu(torch.ones(len(ids), len(ids), dtype=torch.bool), 1), -torch.inf)
        heads = (scores.softmax(-1) @ v).transpose(0, 1).reshape(len(ids), -1)
        x = x + heads @ attn.o_proj.weight.T
        h = _rms(x, layer.post_attention_layernorm.weight, config.rms_norm_eps)
        mlp = layer.mlp
        gelu = torch.nn.functional.gelu(h @ mlp.gate_proj.weight.T)
        x = x + (gelu * (h @ mlp.up_proj.weight.T)) @ mlp.down_proj.weight.T
    return _rms(x, model.model.norm.weight, config.rms_norm_eps) @ model.lm_head.weight.T


@pytest.mark.parametrize("kernel", [1, 4])
def test_forward_equals_a_plain_torch_reimplementation(kernel):
    model = _conv_model(kernel)
    ids = torch.randint(0, SHAPES["vocab_size"], (11,))
    with torch.no_grad():
        got = model(input_ids=ids[None]).logits[0]
        expected = _reference_logits(model, ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_convolution_is_causal_and_reaches_k_minus_1_tokens_back():
    model = _conv_model(4)
    ids = torch.randint(0, SHAPES["vocab_size"], (1, 12))
    changed = ids.clone()
    changed[0, 5] = (changed[0, 5] + 1) % SHAPES["vocab_size"]
    with torch.no_grad():
        conv = model.model.layers[0].conv
        inputs = [model.model.layers[0].input_layernorm(model.model.embed_tokens(x)) for x in (ids, changed)]
        a, b = (conv(h) for h in inputs)
    moved = (a - b).abs().amax(-1)[0] > 1e-7
    assert moved.tolist() == [False] * 5 + [True] * 4 + [False] * 3


def test_kernel_zero_is_llama_exactly():
    conv = _conv_model(0)
    llama = LlamaForCausalLM(LlamaConfig(**SHAPES)).eval()
    llama.load_state_dict(conv.state_dict())
    ids = torch.randint(0, SHAPES["vocab_size"], (2, 9))
    with torch.no_grad():
        assert torch.equal(conv(input_ids=ids).logits, llama(input_ids=ids).logits)


def test_a_cache_cropped_and_rebuilt_gives_the_full_forward():
    """The convolution's inputs live in the cache beside keys and values: running the suffix after
    a cropped prefix cache (as patching does) equals the whole forward."""
    model = _conv_model(4)
    ids = torch.randint(0, SHAPES["vocab_size"], (2, 14))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        cache = model(input_ids=ids[:, :9], use_cache=True).past_key_values
        for cut in (1, 2, 6, 9):
            cropped = new_cache([(k[:, :, :cut], v[:, :, :cut]) for k, v, *_ in cache], model.config)
            positions = torch.arange(cut, 14).expand(2, -1)
            rest = model(input_ids=ids[:, cut:], past_key_values=cropped, position_ids=positions, use_cache=True).logits
            torch.testing.assert_close(rest, full[:, cut:], atol=1e-5, rtol=0)


def test_a_saved_checkpoint_loads_through_auto_classes_and_load_model(tmp_path):
    from bindexp.models.tiny import char_tokenizer

    tokenizer = char_tokenizer()
    model = _conv_model(3)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    assert '"bindexp_conv_llama"' in config and "auto_map" not in config  # no remote code is involved
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    lm = load_model(str(tmp_path), device="cpu")
    assert type(again) is ConvLlamaForCausalLM and lm.family == "bindexp_conv_llama"
    assert "conv_out" in lm.sites.available
    ids = torch.tensor([tokenizer("a=1\nb=a\n#b: ")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(lm.model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_models_without_a_convolution_refuse_conv_out(tiny_llama):
    from bindexp.errors import ModelError

    assert "conv_out" not in tiny_llama.sites.available
    with pytest.raises(ModelError, match="conv_out"):
        tiny_llama.sites.check("conv_out")
