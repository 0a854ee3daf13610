"""Attention patterns on tiny models, checked against a softmax computed by hand from the
attention module's own projections."""

import math

import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from bindexp.interventions.engine.plan import shared_prefix_length, tokenize_pairs
from bindexp.interventions.readouts.attention import attention_weights, role_attention, routing_heads
from bindexp.interventions.results.grid import Grid
from bindexp.models.forward import SharedPrefix
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs


@pytest.fixture
def programs(tiny_model):
    pairs = make_pairs("root_value", 3, 6, 2, hops=2)
    tokenized, dropped = tokenize_pairs(tiny_model, pairs)
    assert not dropped
    return tiny_model, tokenized


def _attention_input(model, layer, ids):
    """The hidden states entering the layer's attention block, by a plain torch hook."""
    box = {}

    def grab(module, args, kwargs):
        box["h"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    handle = model.model.layers[layer].self_attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    return box["h"]


def _hand_softmax(lm, layer, head, ids):
    """softmax(q k^T / sqrt(d) + causal mask) for one query head, from q_proj/k_proj and RoPE."""
    model, config = lm.model, lm.model.config
    attention = model.model.layers[layer].self_attn
    h = _attention_input(model, layer, ids)
    n = len(ids)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    with torch.no_grad():
        q = attention.q_proj(h).view(1, n, -1, head_dim)
        k = attention.k_proj(h).view(1, n, -1, head_dim)
        if hasattr(attention, "q_norm"):  # Qwen3 normalises queries and keys per head before RoPE
            q, k = attention.q_norm(q), attention.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        cos, sin = model.model.rotary_emb(h, torch.arange(n)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        kv_head = head // (config.num_attention_heads // config.num_key_value_heads)
        scores = q[0, head] @ k[0, kv_head].T / math.sqrt(head_dim)
        scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
        return torch.softmax(scores, dim=-1)


@pytest.mark.parametrize("layer", [0, 3])
def test_weights_equal_a_hand_computed_softmax(programs, layer):
    lm, tokenized = programs
    assert lm.model.config.num_key_value_heads < lm.model.config.num_attention_heads  # grouped-query
    ids = tokenized[0].ids
    weights = attention_weights(lm, ids, list(range(len(ids))))
    assert weights.shape == (lm.n_layers, lm.model.config.num_attention_heads, len(ids), len(ids))
    for head in (0, 3):  # heads 0 and 3 read different key/value heads
        torch.testing.assert_close(weights[layer, head], _hand_softmax(lm, layer, head, ids), atol=1e-5, rtol=0)


def test_loaded_attention_implementation_is_restored(programs):
    lm, tokenized = programs
    before = lm.model.config._attn_implementation
    assert before != "eager"  # the tiny models load with sdpa: the switch is exercised
    attention_weights(lm, tokenized[0].ids, [len(tokenized[0].ids) - 1])
    assert lm.model.config._attn_implementation == before


def test_shared_prefix_gives_the_same_weights(tiny_llama):
    shots = make_programs("binding", 2, 5, 1, stream="shots")
    pairs = make_pairs("root_value", 2, 5, 1, exclude={s.text for s in shots})
    tokenized, _ = tokenize_pairs(tiny_llama, pairs, shots)
    start = shared_prefix_length(tokenized)
    assert start > 10
    prefix = SharedPrefix(tiny_llama.model, tokenized[0].ids[:start])
    for item in tokenized:
        destinations = [item.roles["query_var"], item.roles["final"]]
        reused = attention_weights(tiny_llama, item.ids, destinations, prefix=prefix)
        fresh = attention_weights(tiny_llama, item.ids, destinations)
        torch.testing.assert_close(reused, fresh, atol=1e-5, rtol=0)
        torch.testing.assert_close(reused.sum(-1), torch.ones(reused.shape[:-1]), atol=1e-5, rtol=0)


def test_role_means_average_the_programs(programs):
    lm, tokenized = programs
    sources = ["root_value", "chain1_lhs", "query_var", "final"]
    grids = role_attention(lm, [t.ids for t in tokenized], [t.roles for t in tokenized],
                           destinations=["final", "query_var"], sources=sources)
    final = grids["final"]
    assert final.axes == ("layer", "role", "head")
    assert final.mean["attention"].shape == (lm.n_layers, len(sources), lm.model.config.num_attention_heads)
    by_hand = [float(attention_weights(lm, t.ids, [t.roles["final"]])[2, 1, 0, t.roles["root_value"]])
               for t in tokenized]
    assert final.mean["attention"][2, 0, 1] == pytest.approx(np.mean(by_hand), abs=1e-6)
    assert final.ci_low["attention"][2, 0, 1] < np.mean(by_hand) < final.ci_high["attention"][2, 0, 1]
    assert (final.counts["attention"][:, 0] == len(tokenized)).all()
    # the query variable cannot attend to the final token, which comes after it
    query = grids["query_var"]
    assert np.isnan(query.mean["attention"][:, sources.index("final")]).all()
    assert (query.counts["attention"][:, sources.index("final")] == 0).all()


def test_routing_heads_ranks_a_planted_head():
    mean = np.full((3, 2, 4), 0.1)
    mean[2, 1, 3], mean[0, 1, 2] = 0.9, 0.5
    arrays = {"attention": mean}
    grid = Grid(("layer", "role", "head"), {"layer": [0, 1, 2], "role": ["a", "b"], "head": [0, 1, 2, 3]},
                arrays, {"attention": mean - 0.05}, {"attention": mean + 0.05}, np.full(mean.shape, 7),
                {"attention": np.full(mean.shape, 7)})
    table = routing_heads(grid, "b", k=2)
    assert table[["layer", "head"]].values.tolist() == [[2, 3], [0, 2]]
    assert table["attention"].tolist() == pytest.approx([0.9, 0.5])
    assert table["n"].tolist() == [7, 7]
