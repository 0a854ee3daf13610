"""Attention knockout removes exactly the blocked edges."""

import pytest
import torch

from bindexp.interventions.engine.plan import tokenize_pairs
from bindexp.interventions.methods.knockout import knockout_grid, knockout_logits
from bindexp.tasks.counterfactuals import make_pairs


@pytest.fixture
def item(tiny_model):
    pairs = make_pairs("root_value", 1, 6, 3, hops=2)
    tokenized, _ = tokenize_pairs(tiny_model, pairs)
    return tiny_model, tokenized[0]


def _plain(lm, ids):
    with torch.inference_mode():
        return lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_knocking_out_nothing_equals_clean(item):
    lm, it = item
    final, root = it.roles["final"], it.roles["root_value"]
    logits = knockout_logits(lm, it, [{}, {1: [(final, root)]}, {}])
    clean = _plain(lm, it.ids)
    torch.testing.assert_close(logits[0], clean, atol=2e-5, rtol=0)
    torch.testing.assert_close(logits[2], clean, atol=2e-5, rtol=0)  # beside a knocked-out row
    assert (logits[1] - clean).abs().max() > 1e-6


def test_blocking_every_source_leaves_only_the_final_token(item):
    lm, it = item
    if lm.sites.has_conv:
        pytest.skip("a convolution reads the previous tokens outside attention: knockout rightly leaves it")
    final = len(it.ids) - 1
    everything = {layer: [(final, source) for source in range(final)] for layer in range(lm.n_layers)}
    (logits,) = knockout_logits(lm, it, [everything])
    # attending only to itself, the final token computes what it computes alone (RoPE is relative)
    torch.testing.assert_close(logits, _plain(lm, [it.ids[-1]]), atol=2e-5, rtol=0)


def test_knockout_grid_counts_and_clean_accuracy(tiny_llama):
    pairs = make_pairs("root_value", 3, 6, 3, hops=2)
    grid = knockout_grid(tiny_llama, pairs, sources=["root_value", "chain2_lhs", "query_var"], window=2)
    assert grid.labels["layer"] == list(range(tiny_llama.n_layers - 1))
    assert (grid.n == 3).all()
    assert set(grid.metrics) == {"p_drop", "ld_drop", "logit_drop", "accuracy"}


def test_grid_values_match_direct_knockouts_and_eager_attention(tiny_llama):
    from bindexp.models import load_model

    pairs = make_pairs("root_value", 2, 6, 3, hops=2)
    grid = knockout_grid(tiny_llama, pairs, sources=["root_value"])
    tokenized, _ = tokenize_pairs(tiny_llama, pairs)
    drops = []
    for it in tokenized:
        block = {2: [(it.roles["final"], it.roles["root_value"])]}
        clean, knocked = knockout_logits(tiny_llama, it, [{}, block])
        p = lambda logits: torch.softmax(logits, -1)[it.answer.original]  # noqa: E731, B023 - used at once
        drops.append(float(p(clean) - p(knocked)))
    assert grid.mean["p_drop"][2, 0] == pytest.approx(sum(drops) / len(drops), abs=1e-6)
    eager = load_model("tiny-random-llama", device="cpu")
    eager.model.set_attn_implementation("eager")
    it = tokenized[0]
    block = {1: [(it.roles["final"], it.roles["root_value"])]}
    torch.testing.assert_close(knockout_logits(eager, it, [block]), knockout_logits(tiny_llama, it, [block]),
                               atol=2e-5, rtol=0)


def test_knockout_layer_subset_equals_rows_of_the_full_grid(tiny_llama):
    import numpy as np

    pairs = make_pairs("root_value", 2, 6, 3, hops=2)
    full = knockout_grid(tiny_llama, pairs, sources=["root_value"], window=2)
    some = knockout_grid(tiny_llama, pairs, sources=["root_value"], window=2, layers=[2])
    assert some.labels["layer"] == [2]
    np.testing.assert_allclose(some.mean["p_drop"], full.mean["p_drop"][[2]], atol=1e-6)


def _masked_by_hand(lm, ids, layer, head, destination, source):
    """Plain torch: the layer's attention gets a per-head additive mask (causal, plus -inf on one
    head's destination -> source entry) through a forward pre-hook; final logits."""
    total, n_heads = len(ids), lm.model.config.num_attention_heads
    minimum = torch.finfo(torch.float32).min
    mask = torch.zeros(1, n_heads, total, total)
    mask[..., torch.ones(total, total, dtype=torch.bool).triu(1)] = minimum
    mask[0, head, destination, source] = minimum

    def replace_mask(module, args, kwargs):
        return args, {**kwargs, "attention_mask": mask}

    handle = lm.model.model.layers[layer].self_attn.register_forward_pre_hook(replace_mask, with_kwargs=True)
    try:
        return _plain(lm, ids)
    finally:
        handle.remove()


def test_one_head_knockout_equals_a_plain_torch_per_head_mask(item):
    lm, it = item  # tiny llama and tiny qwen3 (4 query heads sharing 2 key/value heads)
    final, root = it.roles["final"], it.roles["root_value"]
    for layer, head in [(0, 0), (2, 3)]:
        (ours,) = knockout_logits(lm, it, [{layer: [(final, root, head)]}])
        torch.testing.assert_close(ours, _masked_by_hand(lm, it.ids, layer, head, final, root), atol=2e-5, rtol=0)
        assert (ours - _plain(lm, it.ids)).abs().max() > 1e-6  # the edge carried something


def test_blocking_an_edge_in_every_head_equals_blocking_it_in_the_layer(item):
    lm, it = item
    final, root = it.roles["final"], it.roles["root_value"]
    every_head = {1: [(final, root, head) for head in range(lm.sites.n_heads)]}
    one_head = {1: [(final, root, 0)]}
    per_head, single = knockout_logits(lm, it, [every_head, one_head])
    (layer_wide,) = knockout_logits(lm, it, [{1: [(final, root)]}])  # alone: a [rows, 1, q, k] mask
    torch.testing.assert_close(per_head, layer_wide, atol=2e-5, rtol=0)
    assert (single - layer_wide).abs().max() > 1e-6


def test_head_edge_knockout_values_equal_single_knockouts(tiny_llama):
    import numpy as np

    from bindexp.interventions.engine.plan import plan_grid
    from bindexp.interventions.methods.knockout import head_edge_knockout

    plan = plan_grid(tiny_llama, make_pairs("root_value", 3, 6, 3, hops=2))
    edges = [(1, 2, "final", "root_value"), (3, 0, "final", "chain2_lhs"), (0, 1, "query_var", "final")]
    values = head_edge_knockout(plan, edges, cells_per_forward=1)  # one forward per edge
    assert values["logit_drop"].shape == (3, 3)
    assert np.isnan(values["logit_drop"][:, 2]).all()  # the final token comes after the query variable
    for pi, it in enumerate(plan.tokenized):
        blocks = [{1: [(it.roles["final"], it.roles["root_value"], 2)]}, {3: [(it.roles["final"], it.roles["chain2_lhs"], 0)]}]
        clean, *knocked = knockout_logits(tiny_llama, it, [{}, *blocks])
        for ei, row in enumerate(knocked):
            drop = float(clean[it.answer.original] - row[it.answer.original])
            assert values["logit_drop"][pi, ei] == pytest.approx(drop, abs=1e-5)
            assert values["p_drop"][pi, ei] == pytest.approx(
                float(torch.softmax(clean, -1)[it.answer.original] - torch.softmax(row, -1)[it.answer.original]), abs=1e-6)


def test_ld_drop_is_the_answers_margin_over_its_best_competitor_lost(tiny_llama):
    """By hand: LD = logit(answer) - max over the other nine digits' logits, clean minus knocked,
    from the two logit vectors of a plain knockout (and on a made-up vector where the numbers are
    visible)."""
    import numpy as np

    from bindexp.interventions.engine.plan import plan_grid
    from bindexp.interventions.methods.knockout import answer_margin, head_edge_knockout

    logits = torch.zeros(20)
    logits[[3, 5, 7]] = torch.tensor([4.0, 6.5, 1.0])  # answer token 3; candidates 3, 5, 7
    assert answer_margin(logits, 3, (3, 5, 7)) == -2.5  # 4.0 - 6.5: the answer loses to token 5
    plan = plan_grid(tiny_llama, make_pairs("root_value", 3, 6, 3, hops=2))
    edges = [(1, 2, "final", "root_value"), (2, 0, "final", "chain2_lhs")]
    values = head_edge_knockout(plan, edges, cells_per_forward=2)
    for pi, it in enumerate(plan.tokenized):
        blocks = [{1: [(it.roles["final"], it.roles["root_value"], 2)]}, {2: [(it.roles["final"], it.roles["chain2_lhs"], 0)]}]
        clean, *knocked = knockout_logits(tiny_llama, it, [{}, *blocks])
        answer, others = it.answer.original, [d for d in it.answer.candidates if d != it.answer.original]
        for ei, row in enumerate(knocked):
            by_hand = (float(clean[answer]) - max(float(clean[d]) for d in others)) \
                - (float(row[answer]) - max(float(row[d]) for d in others))
            assert values["ld_drop"][pi, ei] == pytest.approx(by_hand, abs=1e-5)
    assert not np.allclose(values["ld_drop"], values["logit_drop"])  # not the raw logit under another name
