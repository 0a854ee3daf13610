"""EAP equals exact path patching of every edge where LD is linear in the receivers' inputs, and
EAP-IG's summed effect of the embeddings approaches the exact one as its steps grow."""

import numpy as np
import torch
from torch import nn

from bindexp.interventions.engine.graph_forward import GraphParts, PrefixState
from bindexp.interventions.engine.plan import plan_grid
from bindexp.interventions.methods.edge_attribution import (
    edge_attribution,
    ig_alphas,
    pair_edge_scores,
    receiver_gradients,
)
from bindexp.interventions.methods.path_patching import exact_edges
from bindexp.models.loading import LoadedModel
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs


def _linearized(lm: LoadedModel) -> LoadedModel:
    """The same weights with every norm the identity, zero queries (attention scores 0: uniform
    weights) and MLPs that write nothing: LD is then linear in every receiver's input. (Embeddings
    scaled up: without norms the residual stays at their size.)"""
    import copy

    model = copy.deepcopy(lm.model)
    model.model.norm = nn.Identity()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(50.0)
    for layer in model.model.layers:
        layer.input_layernorm, layer.post_attention_layernorm = nn.Identity(), nn.Identity()
        if hasattr(layer.self_attn, "q_norm"):
            layer.self_attn.q_norm, layer.self_attn.k_norm = nn.Identity(), nn.Identity()
        with torch.no_grad():
            layer.self_attn.q_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return LoadedModel(lm.name + "-linear", model, lm.tokenizer, lm.revision, lm.family)


def _plan(lm, n=3):
    shots = make_programs("binding", 2, 5, 0, stream="shots", hops=2)
    pairs = make_pairs("root_value", n, 5, 0, hops=2, exclude={s.text for s in shots})
    return plan_grid(lm, pairs, shots=shots)


def test_eap_is_exact_on_a_linear_model(amplified):
    lm = _linearized(amplified)
    plan = _plan(lm)
    graph = GraphParts.of(lm).graph
    estimate = edge_attribution(plan)
    exact = exact_edges(plan, graph.edges, cells_per_forward=64)
    assert estimate.labels["edge"] == exact.labels["edge"]
    got, expected = estimate.mean["ld_shift"], exact.mean["ld_shift"]
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(got, expected, atol=1e-5 * max(1.0, np.abs(expected).max()), rtol=0)


def test_eap_is_not_exact_on_the_nonlinear_model(amplified_llama):
    """The check above can fail: with norms, attention and MLPs the same comparison is off."""
    plan = _plan(amplified_llama, n=2)
    graph = GraphParts.of(amplified_llama).graph
    estimate, exact = edge_attribution(plan), exact_edges(plan, graph.edges)
    assert np.abs(estimate.mean["ld_shift"] - exact.mean["ld_shift"]).max() > 1e-3


def test_eap_ig_approaches_the_embeddings_whole_effect(amplified):
    """The embeddings' edges reach every receiver that reads them, so their summed exact effect is
    the whole counterfactual run (path patching into every receiver): LD_cf - LD_clean."""
    parts = GraphParts.of(amplified)
    graph = parts.graph
    plan = _plan(amplified, n=2)
    prefix = PrefixState.of(plan.prefix, graph.n_layers)
    embed_edges = [e for e in graph.edges if e[0] == graph.node_index["embed"]]
    for item in plan.tokenized:
        errors = []
        for steps in (1, 4, 16):
            runs, grads = receiver_gradients(parts, item, prefix, steps)
            total = pair_edge_scores(graph, runs, grads, embed_edges).sum()
            errors.append(abs(total - (runs.ld_cf - runs.ld_clean)))
        runs, grads = receiver_gradients(parts, item, prefix, 0)
        eap_error = abs(pair_edge_scores(graph, runs, grads, embed_edges).sum() - (runs.ld_cf - runs.ld_clean))
        assert errors[0] > errors[1] > errors[2], errors
        assert errors[2] < 0.05 * max(eap_error, errors[0]), (eap_error, errors)


def test_ig_points_are_midpoints():
    assert ig_alphas(4) == [0.125, 0.375, 0.625, 0.875]
    assert ig_alphas(1) == [0.5]


def test_eap_ig_with_many_points_is_batched_like_one_at_a_time(amplified_llama):
    """IG rows are computed several to a forward: the same gradients as one row per forward."""
    from bindexp.interventions.methods import edge_attribution as module

    parts = GraphParts.of(amplified_llama)
    plan = _plan(amplified_llama, n=1)
    prefix = PrefixState.of(plan.prefix, parts.graph.n_layers)
    _, batched = receiver_gradients(parts, plan.tokenized[0], prefix, 6)
    saved = module.IG_ROWS
    module.IG_ROWS = 1
    try:
        _, single = receiver_gradients(parts, plan.tokenized[0], prefix, 6)
    finally:
        module.IG_ROWS = saved
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-4)
