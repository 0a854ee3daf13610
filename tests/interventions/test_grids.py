"""Patch grids: axes, averaging, streaming, and agreement of batched and one-cell grids."""

import json

import numpy as np
import pytest
import torch

from bindexp.interventions.methods.exact import patch_grid
from bindexp.interventions.results.grid import Grid
from bindexp.interventions.results.metrics import AnswerTokens, cell_metrics
from bindexp.io.grids import write_grid
from bindexp.tasks import make_programs
from bindexp.tasks.binding import role_columns
from bindexp.tasks.counterfactuals import make_pairs


@pytest.fixture
def pairs_and_shots():
    shots = make_programs("binding", 2, 6, 2, stream="shots", hops=2)
    pairs = make_pairs("root_value", 5, 6, 2, hops=2, exclude={s.text for s in shots})
    return pairs, shots


def test_role_grid_axes_and_streamed_pairs(tiny_llama, pairs_and_shots, tmp_path):
    pairs, shots = pairs_and_shots
    records = []  # the per-pair values a run streams to pairs.jsonl
    grid = patch_grid(tiny_llama, pairs, site="resid_pre", shots=shots, pairs_per_chunk=2, on_pair=records.append)
    assert grid.axes == ("layer", "role")
    assert grid.labels["role"] == role_columns(2) and grid.labels["layer"] == list(range(tiny_llama.n_layers))
    assert len(records) == 5 and grid.n[:, grid.labels["role"].index("root_value")].tolist() == [5] * 4
    # the grid is the mean of the streamed per-pair values
    for metric in ("normalized_effect", "logit_diff", "iia"):
        stacked = np.array([[[np.nan if v is None else v for v in row] for row in r[metric]] for r in records])
        np.testing.assert_allclose(grid.mean[metric], np.nanmean(stacked, axis=0), atol=1e-6)
    # before the edit nothing can change: chain1_lhs sits before the root constant
    lhs = grid.labels["role"].index("chain1_lhs")
    np.testing.assert_allclose(grid.mean["normalized_effect"][:, lhs], 0.0, atol=1e-6)


def test_batched_grid_equals_one_cell_per_forward(tiny_qwen3, pairs_and_shots):
    pairs, shots = pairs_and_shots
    fast = patch_grid(tiny_qwen3, pairs, site="attn_out", shots=shots, cells_per_forward=64, pairs_per_chunk=5)
    slow = patch_grid(tiny_qwen3, pairs, site="attn_out", shots=shots, cells_per_forward=1, pairs_per_chunk=1)
    for metric in ("logit_diff", "iia", "p_original", "p_counterfactual"):
        np.testing.assert_allclose(fast.mean[metric], slow.mean[metric], atol=1e-5, equal_nan=True)
    # a random model's clean-to-counterfactual gap is tiny, so the ratio magnifies float noise
    np.testing.assert_allclose(fast.mean["normalized_effect"], slow.mean["normalized_effect"], rtol=1e-3,
                               atol=1e-3, equal_nan=True)


def test_head_grid_and_position_grid_shapes(tiny_qwen3, pairs_and_shots):
    pairs, shots = pairs_and_shots
    heads = patch_grid(tiny_qwen3, pairs[:2], site="head", shots=shots, layers=[0, 3])
    assert heads.axes == ("layer", "role", "head") and heads.shape == (2, len(role_columns(2)), 4)
    positions = patch_grid(tiny_qwen3, pairs[:2], site="resid_post", shots=shots, columns="positions")
    assert positions.axes == ("layer", "position")
    assert positions.labels["position"][0] == "L0:0" and positions.labels["position"][-1] == "final"
    assert len(positions.token_labels) == positions.shape[1]


def test_grid_saves_and_loads_without_pickle(tiny_llama, pairs_and_shots, tmp_path):
    pairs, shots = pairs_and_shots
    grid = patch_grid(tiny_llama, pairs[:2], site="mlp_out", shots=shots)
    write_grid(grid, tmp_path, {"model": "tiny"})
    again = Grid.load(tmp_path)
    assert again.axes == grid.axes and again.labels == grid.labels and (again.n == grid.n).all()
    np.testing.assert_allclose(again.mean["logit_diff"], grid.mean["logit_diff"], atol=1e-6)
    frame = grid.to_frame()
    assert len(frame) == grid.n.size and {"layer", "role", "token", "normalized_effect_ci_low"} <= set(frame)
    assert json.loads((tmp_path / "grid.json").read_text())["settings"] == {"model": "tiny"}
    figure = grid.plot("normalized_effect")
    assert figure.axes


def test_metrics_by_hand():
    answer = AnswerTokens(original=2, counterfactual=5, candidates=(2, 5, 7))
    logits = torch.tensor([[0.0, 0, 3, 0, 0, 1, 0, 2], [0.0, 0, 1, 0, 0, 4, 0, 0]])
    clean = logits[0]  # LD_clean = 1 - 3 = -2
    metrics = cell_metrics(logits, answer, clean, ld_cf=3.0)
    assert metrics["logit_diff"].tolist() == [-2.0, 3.0]
    assert metrics["normalized_effect"].tolist() == [0.0, 1.0]
    assert metrics["iia"].tolist() == [0.0, 1.0]
    p_clean = float(torch.softmax(logits[0], -1)[2])
    assert metrics["p_original"][0] == pytest.approx(p_clean)
    assert metrics["p_original_change"][0] == pytest.approx(0.0, abs=1e-7)
    assert metrics["p_original_change"][1] == pytest.approx(float(torch.softmax(logits[1], -1)[2]) - p_clean)
    assert torch.isnan(cell_metrics(logits, answer, clean, ld_cf=-2.0)["normalized_effect"]).all()


def test_counter_pairs_patch_from_the_notebook_api(tiny_llama, tmp_path):
    pairs = make_pairs("item_value", 4, 5, 0, task="counter")
    records = []
    grid = patch_grid(tiny_llama, pairs, site="resid_pre", on_pair=records.append)
    assert grid.axes == ("layer", "role")
    assert grid.labels["role"] == ["match_item", "other_item", "target", "query_var", "final"]
    assert [r["original"] for r in records] == [p.original.text for p in pairs]
    # the edited item is the only token that differs: writing it at layer 0 is the whole counterfactual run
    edited = grid.labels["role"].index("match_item")
    np.testing.assert_allclose(grid.mean["logit_diff"][0, edited], np.mean([r["ld_cf"] for r in records]), atol=1e-4)
    assert (grid.n[:, edited] == 4).all()


def test_bounded_metrics_keep_their_intervals_in_range_and_say_so(tmp_path):
    from bindexp.interventions.results.grid import GridAccumulator

    accumulator = GridAccumulator(("layer", "role"), {"layer": [0], "role": ["a", "b"]},
                                  ("p_original", "rank_answer", "logit_diff", "iia"))
    # cell a: a probability near 0 and a rank near 1 with a wide spread (a t interval leaves the range);
    # cell b: tight values far from the bounds (nothing to clip)
    for p, rank, iia in ((1e-9, 1.0, 1.0), (0.4, 900.0, 0.0), (1e-9, 1.0, 0.0)) + ((1e-9, 1.0, 0.0),) * 17:
        accumulator.add({"p_original": np.array([[p, 0.5]]), "rank_answer": np.array([[rank, 3.0]]),
                         "logit_diff": np.array([[-5.0 * p, 2.0]]), "iia": np.array([[iia, 1.0]])})
    grid = accumulator.grid()
    values = np.array([1e-9, 0.4] + [1e-9] * 18)
    t_low = values.mean() - 2.093 * values.std(ddof=1) / np.sqrt(20)  # t(0.975, 19) = 2.093 by the table
    assert t_low < 0 and grid.ci_low["p_original"][0, 0] == 0.0  # clipped at 0, not -0.03
    assert grid.ci_low["rank_answer"][0, 0] == 1.0 and grid.ci_low["logit_diff"][0, 0] < 0  # unbounded: untouched
    assert grid.ci_low["p_original"][0, 1] == pytest.approx(0.5)
    assert grid.info["clipped"] == {"p_original": 1, "rank_answer": 1}
    frame = grid.to_frame().set_index("role")
    assert frame.loc["a", "p_original_ci_clipped"] and not frame.loc["b", "p_original_ci_clipped"]
    assert grid.mean["iia"][0, 0] == 0.05  # successes / n: a streamed mean of these values is 0.05000000000000001
    write_grid(grid, tmp_path / "g")
    assert Grid.load(tmp_path / "g").to_frame().set_index("role").loc["a", "rank_answer_ci_clipped"]
