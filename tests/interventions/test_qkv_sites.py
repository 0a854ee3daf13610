"""The q, k, v sites: writing the counterfactual's queries, keys and values of every head at a layer
reproduces that layer's counterfactual attention output; grids over them carry key/value heads."""

import numpy as np
import pytest
import torch

from bindexp.errors import ModelError
from bindexp.interventions.engine.patching import Cell, patched_logits
from bindexp.interventions.engine.plan import plan_grid, tokenize_pairs
from bindexp.interventions.engine.prepared import prepare_pairs
from bindexp.interventions.methods.atp import estimate_cells
from bindexp.interventions.methods.exact import patch_cells
from bindexp.models.sites import SiteMap
from bindexp.models.tracing import site_activation
from bindexp.tasks.counterfactuals import make_pairs


def _pair(lm):
    tokenized, _ = tokenize_pairs(lm, make_pairs("root_value", 2, 5, 3, hops=2))
    return tokenized


def _attn_out(lm, ids, layer, writes=None):
    """attn_out at `layer` over the whole prompt, with `writes` {site: values [T, width]} written."""
    with torch.no_grad():
        with lm.traced.trace(torch.tensor([ids])):
            for site, values in (writes or {}).items():
                site_activation(lm.sites, lm.traced, site, layer)[0] = values
            out = site_activation(lm.sites, lm.traced, "attn_out", layer).save()
    return out[0]


def _site(lm, ids, site, layer):
    with torch.no_grad():
        with lm.traced.trace(torch.tensor([ids])):
            value = site_activation(lm.sites, lm.traced, site, layer).save()
    return value[0]


@pytest.mark.parametrize("layer", [0, 2])
def test_counterfactual_q_k_v_give_the_counterfactual_attention_output(tiny_model, layer):
    for item in _pair(tiny_model):
        cf = {site: _site(tiny_model, item.cf_ids, site, layer) for site in ("q", "k", "v")}
        expected = _attn_out(tiny_model, item.cf_ids, layer)
        got = _attn_out(tiny_model, item.ids, layer, cf)
        clean = _attn_out(tiny_model, item.ids, layer)
        assert (clean - expected).abs().max() > 1e-4  # the pair changes this layer's attention
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        # q alone is not enough where keys or values changed
        assert (_attn_out(tiny_model, item.ids, layer, {"q": cf["q"]}) - expected).abs().max() > 1e-5


def test_per_head_writes_of_every_head_equal_the_whole_site(tiny_llama):
    """Cells of single heads at every position, one per forward, summed up to the whole write: the
    head columns tile the projection's output (key/value heads for k and v)."""
    tokenized = _pair(tiny_llama)
    prepared = prepare_pairs(tiny_llama, "k", tokenized)
    sites = tiny_llama.sites
    assert sites.heads("k") == [0, 1] and sites.heads("q") == [0, 1, 2, 3]
    item = tokenized[0]
    positions = tuple(range(item.first_diff, len(item.ids)))
    every = Cell(0, 1, positions, tuple(sites.heads("k")))
    got = patched_logits(tiny_llama, "k", prepared, [every])
    expected = patched_logits(tiny_llama, "k", prepared, [Cell(0, 1, positions, None)])
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    one = patched_logits(tiny_llama, "k", prepared, [Cell(0, 1, positions, 1)])
    assert (one - expected).abs().max() > 1e-5  # one key/value head is not both


def test_key_value_heads_name_the_query_heads_they_serve(tiny_llama):
    sites = tiny_llama.sites
    assert sites.kv_heads == 2 and sites.serves(1) == [2, 3] and sites.kv_head_of(3) == 1
    pairs = make_pairs("root_value", 2, 5, 3, hops=2)
    grid = patch_cells(plan_grid(tiny_llama, pairs, site="v", layers=[1]))
    assert grid.labels["head"] == [0, 1]
    assert grid.info["kv_head_serves"] == {"0": [0, 1], "1": [2, 3]}
    estimate = estimate_cells(plan_grid(tiny_llama, pairs, site="q"))
    assert estimate.labels["head"] == [0, 1, 2, 3] and "kv_head_serves" not in estimate.info


def test_fused_projections_refuse_the_sites():
    sites = SiteMap("gpt2", 2, 2, 8)
    assert "q" not in sites.available and "head" in sites.available
    with pytest.raises(ModelError, match="site 'k' does not exist in this gpt2 model"):
        sites.check("k")


def test_patch_runs_on_k_get_their_noise_floor(tiny_conv):
    """The patch run's grid (exact method) on a key site: head axis of key/value heads, a noise floor
    per cell from the clean run's own keys (rounding only: far below any real effect)."""
    from bindexp.jobs.patch import PatchSettings
    from bindexp.runs.patching import compute_grid
    from bindexp.vocab import NOISE_FLOOR

    settings = PatchSettings(model="tiny-random-conv", site="k", hops=2, seq_len=5, shots=0, num_programs=3,
                             only_correct=False, systematic_only=False, min_gap=0, noise_floor_pairs=2, progress=False)
    pairs = make_pairs("root_value", 3, 5, 3, hops=2)
    grid = compute_grid(tiny_conv, settings, pairs, []).grid
    assert grid.labels["head"] == [0, 1] and grid.info["kv_head_serves"]["1"] == [2, 3]
    floor = grid.mean[NOISE_FLOOR]
    assert np.nanmax(floor) < 1e-3 and np.isfinite(floor).any()
