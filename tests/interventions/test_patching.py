"""Exact patching invariants on tiny random models, checked against plain torch hooks."""

import pytest
import torch

from bindexp.interventions.engine.patching import Cell, patched_logits
from bindexp.interventions.engine.plan import shared_prefix_length, tokenize_pairs
from bindexp.interventions.engine.prepared import prepare_pairs
from bindexp.models.forward import SharedPrefix
from bindexp.models.sites import SITES
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs
from bindexp.vocab import HEAD_SITES

ATOL = 2e-5


@pytest.fixture
def setup(tiny_model, request):
    site = request.node.callspec.params.get("site") if hasattr(request.node, "callspec") else None
    if site is not None and site not in tiny_model.sites.available:
        pytest.skip(f"{tiny_model.name} has no {site} site")
    shots = make_programs("binding", 2, 6, 0, stream="shots", hops=2)
    pairs = make_pairs("root_value", 3, 6, 0, hops=2, exclude={s.text for s in shots})
    # a pair without the few-shot prefix gives a program of a different token length
    tokenized, dropped = tokenize_pairs(tiny_model, pairs, shots)
    assert not dropped
    start = shared_prefix_length(tokenized)
    prefix = SharedPrefix(tiny_model.model, tokenized[0].ids[:start])
    return tiny_model, tokenized, prefix


def _plain(model, ids):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def _module(model, site, layer):
    block = model.model.layers[layer]
    return {"resid_pre": block, "resid_post": block, "attn_out": block.self_attn, "mlp_out": block.mlp,
            "head": block.self_attn.o_proj, "conv_out": getattr(block, "conv", None), "q": block.self_attn.q_proj,
            "k": block.self_attn.k_proj, "v": block.self_attn.v_proj}[site]


def _capture(model, site, layer, ids):
    """The site's activation over a whole prompt, with a plain forward hook."""
    box = {}
    module = _module(model, site, layer)

    def grab(mod, args, kwargs, output):
        value = (args[0] if args else kwargs["hidden_states"]) if site in ("resid_pre", "head") else output
        box["v"] = (value[0] if isinstance(value, tuple) else value).detach().clone()

    handle = module.register_forward_hook(grab, with_kwargs=True)
    try:
        _plain(model, ids)
    finally:
        handle.remove()
    return box["v"][0]


def _hook_patch(lm, site, layer, position, head, clean_ids, cf_ids):
    """Reference: full clean forward with the cf activation written by a torch hook."""
    model = lm.model
    cf_value = _capture(model, site, layer, cf_ids)[position]
    config = model.config
    width = config.hidden_size // config.num_attention_heads if not getattr(config, "head_dim", None) else config.head_dim
    module = _module(model, site, layer)

    def write(tensor):
        tensor = tensor.clone()
        if head is None:
            tensor[0, position] = cf_value
        else:
            tensor[0, position, head * width:(head + 1) * width] = cf_value[head * width:(head + 1) * width]
        return tensor

    if site in ("resid_pre", "head"):
        def pre(mod, args, kwargs):
            if args:
                return (write(args[0]),) + args[1:], kwargs
            return args, {**kwargs, "hidden_states": write(kwargs["hidden_states"])}
        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    else:
        def post(mod, args, output):
            if isinstance(output, tuple):
                return (write(output[0]),) + output[1:]
            return write(output)
        handle = module.register_forward_hook(post)
    try:
        return _plain(model, clean_ids)
    finally:
        handle.remove()


@pytest.mark.parametrize("site", SITES)
def test_prepared_runs_match_plain_forwards(setup, site):
    lm, tokenized, prefix = setup
    prepared = prepare_pairs(lm, site, tokenized, prefix)
    for item, pair in zip(tokenized, prepared):
        torch.testing.assert_close(pair.clean_logits, _plain(lm.model, item.ids), atol=ATOL, rtol=0)
        torch.testing.assert_close(pair.cf_logits, _plain(lm.model, item.cf_ids), atol=ATOL, rtol=0)


@pytest.mark.parametrize("site", SITES)
def test_sample_of_cells_equals_torch_hook_patching(setup, site):
    lm, tokenized, prefix = setup
    prepared = prepare_pairs(lm, site, tokenized, prefix)
    n_layers = lm.n_layers
    cells = []
    for index, item in enumerate(tokenized):
        for layer in (0, n_layers // 2, n_layers - 1):
            for role in ("root_value", "chain2_lhs", "final"):
                cells.append(Cell(index, layer, (item.roles[role],), 1 if site in HEAD_SITES else None))
    got = patched_logits(lm, site, prepared, cells, cells_per_forward=5)
    for cell, logits in zip(cells, got):
        item = tokenized[cell.pair]
        expected = _hook_patch(lm, site, cell.layer, cell.positions[0], cell.head, item.ids, item.cf_ids)
        torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("site", SITES)
def test_patching_nothing_gives_the_clean_logits(setup, site):
    lm, tokenized, prefix = setup
    prepared = prepare_pairs(lm, site, tokenized, prefix)
    cells = [Cell(i, layer, (item.roles["root_value"], item.roles["final"]), 0 if site in HEAD_SITES else None)
             for i, item in enumerate(tokenized) for layer in range(lm.n_layers)]
    got = patched_logits(lm, site, prepared, cells, source="clean")
    expected = torch.stack([prepared[c.pair].clean_logits for c in cells])
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_patching_every_position_at_the_first_layer_gives_the_counterfactual(setup):
    lm, tokenized, prefix = setup
    prepared = prepare_pairs(lm, "resid_pre", tokenized, prefix)
    # positions before the edit are identical in both runs, so this is every position
    cells = [Cell(i, 0, tuple(range(item.first_diff, len(item.ids)))) for i, item in enumerate(tokenized)]
    got = patched_logits(lm, "resid_pre", prepared, cells)
    for item, logits in zip(tokenized, got):
        torch.testing.assert_close(logits, _plain(lm.model, item.cf_ids), atol=ATOL, rtol=0)


def test_final_token_at_the_last_layer_moves_the_prediction(setup):
    lm, tokenized, prefix = setup
    prepared = prepare_pairs(lm, "resid_post", tokenized, prefix)
    last = lm.n_layers - 1
    cells = [Cell(i, last, (item.roles["final"],)) for i, item in enumerate(tokenized)]
    got = patched_logits(lm, "resid_post", prepared, cells)
    for item, logits in zip(tokenized, got):
        cf = _plain(lm.model, item.cf_ids)
        torch.testing.assert_close(logits, cf, atol=ATOL, rtol=0)
        assert int(logits.argmax()) == int(cf.argmax())


@pytest.mark.parametrize("site", HEAD_SITES)
def test_batched_cells_equal_one_at_a_time(setup, site):
    lm, tokenized, prefix = setup
    prepared = prepare_pairs(lm, site, tokenized, prefix)
    heads = (0, lm.sites.heads(site)[-1])
    cells = [Cell(i, layer, (pos,), head) for i, item in enumerate(tokenized) for layer in range(lm.n_layers)
             for pos in (item.roles["root_value"], item.roles["query_var"]) for head in heads]
    together = patched_logits(lm, site, prepared, cells, cells_per_forward=64)
    alone = patched_logits(lm, site, prepared, cells, cells_per_forward=1)
    torch.testing.assert_close(together, alone, atol=ATOL, rtol=0)


def test_prefix_reuse_equals_no_reuse(tiny_llama):
    shots = make_programs("binding", 3, 5, 4, stream="shots")
    pairs = make_pairs("root_value", 2, 5, 4, exclude={s.text for s in shots})
    tokenized, _ = tokenize_pairs(tiny_llama, pairs, shots)
    start = shared_prefix_length(tokenized)
    assert start > 20
    reused = prepare_pairs(tiny_llama, "resid_pre", tokenized, SharedPrefix(tiny_llama.model, tokenized[0].ids[:start]))
    fresh = prepare_pairs(tiny_llama, "resid_pre", tokenized, None)
    cells = [Cell(i, layer, (item.roles["root_value"],)) for i, item in enumerate(tokenized) for layer in (0, 2)]
    torch.testing.assert_close(patched_logits(tiny_llama, "resid_pre", reused, cells),
                               patched_logits(tiny_llama, "resid_pre", fresh, cells), atol=ATOL, rtol=0)


def test_programs_of_different_token_lengths_share_a_batch(tiny_llama):
    short = make_pairs("root_value", 2, 4, 1)
    long = make_pairs("root_value", 2, 9, 1)
    tokenized, _ = tokenize_pairs(tiny_llama, short + long)
    assert len({len(t.ids) for t in tokenized}) > 1
    prepared = prepare_pairs(tiny_llama, "resid_pre", tokenized, None)
    cells = [Cell(i, 1, (item.roles["root_value"],)) for i, item in enumerate(tokenized)]
    together = patched_logits(tiny_llama, "resid_pre", prepared, cells, cells_per_forward=8)
    for cell, logits in zip(cells, together):
        item = tokenized[cell.pair]
        expected = _hook_patch(tiny_llama, "resid_pre", 1, cell.positions[0], None, item.ids, item.cf_ids)
        torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


def test_cells_before_the_edit_change_nothing(setup):
    """The grid skips cells before the first differing token; computing them must agree."""
    lm, tokenized, prefix = setup
    prepared = prepare_pairs(lm, "resid_pre", tokenized, prefix)
    cells = [Cell(i, layer, (item.roles["chain1_lhs"],)) for i, item in enumerate(tokenized)
             if prefix.length <= item.roles["chain1_lhs"] < item.first_diff for layer in range(lm.n_layers)]
    assert cells
    got = patched_logits(lm, "resid_pre", prepared, cells)
    expected = torch.stack([prepared[c.pair].clean_logits for c in cells])
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
