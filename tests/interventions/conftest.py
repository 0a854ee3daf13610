"""Models for the edge-level methods' tests: tiny random models with weights amplified (so that
patching moves LD by far more than float rounding), and a model with a planted two-head circuit."""

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from bindexp.models.loading import LoadedModel
from bindexp.models.tiny import char_tokenizer, tiny_random_model

GRAPH_FAMILIES = ["llama", "qwen3", "conv"]


def amplified_model(family: str, seed: int = 3, factor: float = 6.0) -> LoadedModel:
    """A tiny random model (`bindexp.models.tiny`, or qwen2 from its config) with every matrix but the
    embedding multiplied by `factor`: sharper attention, larger contributions, LD gaps ~0.1-1."""
    if family == "qwen2":
        tokenizer = char_tokenizer()
        config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                             eos_token_id=2, tie_word_embeddings=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
            for module in model.modules():  # qwen2's q/k/v biases start at 0: give them values
                if isinstance(module, torch.nn.Linear) and module.bias is not None:
                    torch.nn.init.normal_(module.bias, std=0.1)
    else:
        model, tokenizer = tiny_random_model(family, seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 2 and "embed" not in name:
                parameter.mul_(factor)
    return LoadedModel(f"amplified-{family}", model, tokenizer, f"seed{seed}", model.config.model_type)


@pytest.fixture(scope="session")
def make_amplified():
    """`amplified_model` as a fixture (each family built once per session)."""
    made = {}

    def make(family: str) -> LoadedModel:
        if family not in made:
            made[family] = amplified_model(family)
        return made[family]

    return make


@pytest.fixture(scope="session", params=GRAPH_FAMILIES)
def amplified(request, make_amplified):
    return make_amplified(request.param)


@pytest.fixture(scope="session")
def amplified_llama(make_amplified):
    return make_amplified("llama")


@pytest.fixture(scope="session")
def planted():
    return planted_model()


def planted_model() -> LoadedModel:
    """Head A (0.0) copies every token's code forward (uniform attention: its queries are 0), head B
    (1.2) reads A's copies to the final token, the unembedding reads B's output: the only way the
    program's tokens reach the logits is embed -> A's value -> B's value -> logits. Everything else
    writes nothing (other heads' output columns and the MLPs' down projections are 0); a large
    constant feature keeps the norms nearly constant. Names: A's value input is key/value head 0's
    (`0.kv0 v`), B's is key/value head 1's (`1.kv1 v`)."""
    model, tokenizer = tiny_random_model("llama", seed=0)
    hd, code, a_space, b_space, const = 16, slice(0, 16), slice(16, 32), slice(32, 48), 63
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        embedding = model.model.embed_tokens.weight
        embedding[:, code] = torch.randn(embedding.shape[0], 16, generator=generator)
        embedding[:, const] = 20.0
        for norm in [model.model.norm] + [m for layer in model.model.layers
                                          for m in (layer.input_layernorm, layer.post_attention_layernorm)]:
            norm.weight.fill_(1.0)
        eye = torch.eye(hd) * 4.0
        first, second = model.model.layers[0].self_attn, model.model.layers[1].self_attn
        first.v_proj.weight[0:hd, code] = eye  # kv head 0 serves heads 0 and 1
        first.o_proj.weight[a_space, 0:hd] = eye  # only head 0 (A) writes
        second.v_proj.weight[hd : 2 * hd, a_space] = eye  # kv head 1 serves heads 2 and 3
        second.o_proj.weight[b_space, 2 * hd : 3 * hd] = eye  # only head 2 (B) writes
        model.lm_head.weight[:, b_space] = embedding[:, code] * 4.0
    return LoadedModel("planted-circuit", model.eval(), tokenizer, "planted", "llama")
