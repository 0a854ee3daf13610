"""The graph forward computes the model: clean logits, every head's and MLP's output, after a shared
prefix or not; receiver sets parse; families it does not cover are refused."""

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from bindexp.errors import InputError, ModelError
from bindexp.interventions.engine.graph import Graph
from bindexp.interventions.engine.graph_forward import GraphParts, PrefixState, graph_forward
from bindexp.interventions.engine.graph_runs import token_embeds
from bindexp.interventions.engine.plan import shared_prefix_length, tokenize_pairs
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel
from bindexp.models.tiny import char_tokenizer
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs


def _prompts(lm, shots=2):
    shot_programs = make_programs("binding", shots, 6, 0, stream="shots", hops=2)
    pairs = make_pairs("root_value", 2, 6, 0, hops=2, exclude={s.text for s in shot_programs})
    tokenized, dropped = tokenize_pairs(lm, pairs, shot_programs)
    assert not dropped
    start = shared_prefix_length(tokenized)
    return tokenized, SharedPrefix(lm.model, tokenized[0].ids[:start])


def _hf_parts(lm, ids):
    """The model's own per-layer attention output (o_proj's output) and MLP output, by plain hooks."""
    captured = {}
    handles = []
    for index, layer in enumerate(lm.model.model.layers):
        handles.append(layer.self_attn.o_proj.register_forward_hook(
            lambda m, a, out, i=index: captured.__setitem__(("attn", i), out[0].detach())))
        handles.append(layer.mlp.register_forward_hook(
            lambda m, a, out, i=index: captured.__setitem__(("mlp", i), out[0].detach())))
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
    finally:
        for handle in handles:
            handle.remove()
    return logits, captured


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "conv"])
@pytest.mark.parametrize("with_prefix", [False, True])
def test_clean_graph_forward_is_the_model(make_amplified, family, with_prefix):
    lm = make_amplified(family)
    parts = GraphParts.of(lm)
    graph = parts.graph
    tokenized, shared = _prompts(lm)
    prefix = PrefixState.of(shared, graph.n_layers) if with_prefix else None
    start = shared.length if with_prefix else 0
    for item in tokenized:
        expected, captured = _hf_parts(lm, item.ids)
        with torch.no_grad():
            run = graph_forward(parts, token_embeds(parts, item.ids, start), prefix=prefix)
        torch.testing.assert_close(run.logits[0], expected, atol=1e-5, rtol=0)
        for layer in range(graph.n_layers):
            heads = [graph.node_index[f"{layer}.{h}"] for h in range(graph.n_heads)]
            bias = lm.model.model.layers[layer].self_attn.o_proj.bias
            attn = run.outputs[heads, 0].sum(0) + (0 if bias is None else bias)
            torch.testing.assert_close(attn, captured[("attn", layer)][start:], atol=1e-5, rtol=0)
            mlp = run.outputs[graph.node_index[f"mlp {layer}"], 0]
            torch.testing.assert_close(mlp, captured[("mlp", layer)][start:], atol=1e-5, rtol=0)


def test_rows_of_a_batch_equal_one_at_a_time(amplified_llama):
    parts = GraphParts.of(amplified_llama)
    tokenized, _ = _prompts(amplified_llama)
    item = tokenized[0]
    embeds = torch.cat([token_embeds(parts, item.ids, 0), token_embeds(parts, item.cf_ids, 0)])
    with torch.no_grad():
        both = graph_forward(parts, embeds)
        alone = [graph_forward(parts, embeds[i : i + 1]) for i in range(2)]
    torch.testing.assert_close(both.logits, torch.cat([a.logits for a in alone]), atol=1e-5, rtol=0)


def test_families_outside_the_graph_forward_are_refused():
    config = GPT2Config(vocab_size=len(char_tokenizer()), n_embd=32, n_layer=2, n_head=2)
    gpt2 = LoadedModel("tiny-gpt2", AutoModelForCausalLM.from_config(config), char_tokenizer(), "0", "gpt2")
    with pytest.raises(ModelError, match="covers the families llama, bindexp_conv_llama, qwen2, qwen3, not 'gpt2'"):
        GraphParts.of(gpt2)


def test_graph_nodes_receivers_and_edges():
    graph = Graph(n_layers=2, n_heads=4, n_kv_heads=2)
    assert [n.name for n in graph.nodes] == ["embed", "0.0", "0.1", "0.2", "0.3", "mlp 0",
                                            "1.0", "1.1", "1.2", "1.3", "mlp 1"]
    names = [r.name for r in graph.receivers]
    assert names[:9] == ["0.0 q", "0.1 q", "0.2 q", "0.3 q", "0.kv0 k", "0.kv1 k", "0.kv0 v", "0.kv1 v", "mlp 0"]
    assert names[-1] == "logits" and graph.receivers[names.index("1.kv1 v")].serves == (2, 3)
    # senders come before their receivers: the heads of a layer feed its MLP, not its own queries
    index = graph.node_index
    assert graph.feeds(index["0.2"], graph.receiver_index["mlp 0"])
    assert not graph.feeds(index["0.2"], graph.receiver_index["0.1 q"])
    assert not graph.feeds(index["mlp 0"], graph.receiver_index["0.1 q"])
    assert graph.feeds(index["mlp 0"], graph.receiver_index["1.kv0 k"])
    into_logits = [e for e in graph.edges if graph.receivers[e[1]].name == "logits"]
    assert len(into_logits) == len(graph.nodes)
    # edges into layer-1 q/k/v: the 6 nodes of stages 0-2 times 8 receivers; into mlp 1: 10 nodes
    assert len(graph.edges) == 1 * 8 + 5 * 1 + 6 * 8 + 10 * 1 + 11


def test_receiver_sets_parse_and_refuse():
    graph = Graph(n_layers=3, n_heads=4, n_kv_heads=2)
    assert [graph.receivers[r].name for r in graph.receiver_set("k:2.1+2.3").receivers] == ["2.kv0 k", "2.kv1 k"]
    assert [graph.receivers[r].name for r in graph.receiver_set("q:1.2").receivers] == ["1.2 q"]
    assert graph.receiver_set("mlp:2").kind == "mlp" and graph.receiver_set("logits").layer == 3
    for bad, message in (("q:1.2+2.0", "spans layers"), ("v:5.0", "no layer 5"), ("q:0.9", "no head 9"),
                         ("attn:1", "is not one of")):
        with pytest.raises(InputError, match=message):
            graph.receiver_set(bad)


@pytest.mark.slow
def test_smollm2_graph_forward_is_the_model(smollm):
    parts = GraphParts.of(smollm)
    tokenized, shared = _prompts(smollm, shots=3)
    prefix = PrefixState.of(shared, parts.graph.n_layers)
    for item in tokenized:
        with torch.no_grad():
            expected = smollm.model(input_ids=torch.tensor([item.ids])).logits[0, -1]
            run = graph_forward(parts, token_embeds(parts, item.ids, shared.length), prefix=prefix)
        torch.testing.assert_close(run.logits[0], expected, atol=1e-4, rtol=0)
