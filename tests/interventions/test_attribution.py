"""AtP is exact where the metric is linear in the activation, and ranks like exact elsewhere."""

import numpy as np
import pytest
import torch

from bindexp.interventions.methods.atp import attribution_grid, compare_cells, spearman, top_cells
from bindexp.interventions.methods.exact import patch_grid
from bindexp.models import load_model
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs


@pytest.fixture
def linear_head_model():
    """A tiny model without its final norm: logits are linear in the last layer's resid_post and
    mlp_out, so first-order attribution must equal exact patching there."""
    lm = load_model("tiny-random-llama", device="cpu", seed=5)
    lm.model.model.norm = torch.nn.Identity()
    return lm


@pytest.mark.parametrize("site", ["resid_post", "mlp_out"])
def test_atp_equals_exact_where_linear(linear_head_model, site):
    shots = make_programs("binding", 1, 5, 0, stream="shots")
    pairs = make_pairs("root_value", 3, 5, 0, hops=2, exclude={s.text for s in shots})
    last = linear_head_model.n_layers - 1
    atp = attribution_grid(linear_head_model, pairs, site=site, shots=shots)
    exact = patch_grid(linear_head_model, pairs, site=site, shots=shots, layers=[last])
    for metric in ("logit_diff", "normalized_effect"):
        np.testing.assert_allclose(atp.mean[metric][last], exact.mean[metric][0], atol=1e-4, equal_nan=True)


def test_atp_ranks_cells_like_exact_and_verifies_top_k(tiny_llama):
    pairs = make_pairs("root_value", 4, 6, 1, hops=2)
    atp = attribution_grid(tiny_llama, pairs, site="resid_pre")
    exact = patch_grid(tiny_llama, pairs, site="resid_pre")
    assert spearman(atp.mean["normalized_effect"].ravel(), exact.mean["normalized_effect"].ravel()) > 0.5
    cells = top_cells(atp, 3)
    checked = patch_grid(tiny_llama, pairs, site="resid_pre", layers=sorted({c[0] for c in cells}), only=set(cells))
    table = compare_cells(atp, checked, cells)
    for row in table.to_dict("records"):
        li = exact.labels["layer"].index(row["layer"])
        ci = exact.labels["role"].index(row["role"])
        assert row["exact"] == pytest.approx(float(exact.mean["normalized_effect"][li, ci]), abs=1e-5)


def test_spearman_by_hand():
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1.0, np.nan]), np.array([1.0, 2.0])))


def test_atp_is_exact_zero_before_the_edit_with_one_pair(tiny_llama):
    # one pair: everything up to the edit is shared prefix, and must have no effect
    (pair,) = make_pairs("root_value", 1, 6, 2, hops=2)
    atp = attribution_grid(tiny_llama, [pair], site="resid_pre")
    exact = patch_grid(tiny_llama, [pair], site="resid_pre")
    before = atp.labels["role"].index("chain1_lhs")
    assert np.allclose(atp.mean["normalized_effect"][:, before], 0.0)
    assert np.allclose(exact.mean["normalized_effect"][:, before], 0.0)


def test_atp_layer_subset_equals_rows_of_the_full_grid(tiny_llama):
    pairs = make_pairs("root_value", 2, 6, 3, hops=2)
    full = attribution_grid(tiny_llama, pairs, site="head")
    some = attribution_grid(tiny_llama, pairs, site="head", layers=[1, 3])
    assert some.labels["layer"] == [1, 3]
    np.testing.assert_allclose(some.mean["logit_diff"], full.mean["logit_diff"][[1, 3]], atol=1e-6)
