"""Patch summaries that mean what their names say (issue 9 items 11-16, issue 13 item 7)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bindexp.interventions.methods.exact import patch_grid
from bindexp.interventions.results.grid import Grid
from bindexp.interventions.results.metrics import AnswerTokens, cell_metrics
from bindexp.interventions.results.summary import grid_summary
from bindexp.jobs.patch import PatchSettings, run_patch
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs


def _grid(mean, low, high, columns=("root_value", "final")):
    """A layers x columns grid of one metric with the given means and interval bounds."""
    mean, low, high = (np.array(a, dtype=float) for a in (mean, low, high))
    layers = list(range(mean.shape[0]))
    return Grid(("layer", "role"), {"layer": layers, "role": list(columns)}, {"normalized_effect": mean},
                {"normalized_effect": low}, {"normalized_effect": high}, np.full(mean.shape, 10))


def _settings(tmp_path, **extra):
    base = dict(model="tiny-random-llama", seq_len=5, num_programs=3, shots=1, hops=2, only_correct=False,
                wandb_mode="disabled", output_dir=str(tmp_path), progress=False, min_gap=0)
    return PatchSettings(**{**base, **extra})


# issue 13 item 7: the best layer is a range
def test_best_layers_are_every_layer_whose_interval_overlaps_the_best():
    # a flat effect around 1.0 from layer 0 to 3, then it falls away; layer 2 is the single highest
    mean = [[1.00, 0], [0.99, 0], [1.02, 0], [0.98, 0], [0.40, 0], [0.10, 0]]
    low = [[0.95, 0], [0.94, 0], [0.97, 0], [0.93, 0], [0.35, 0], [0.05, 0]]
    high = [[1.05, 0], [1.04, 0], [1.07, 0], [1.03, 0], [0.45, 0], [0.15, 0]]
    best = grid_summary(_grid(mean, low, high), "normalized_effect")["best_layer_by_column"]["root_value"]
    assert best["layers"] == [0, 1, 2, 3] and best["layer_range"] == [0, 3]
    assert best["peak_layer"] == 2 and best["ci"] == [0.97, 1.07]


# item 11: handoff with intervals, only for the value-role counterfactual
def test_handoff_is_the_first_layer_where_final_clears_the_value_role_by_its_intervals():
    # layer 1: final's mean is above root's but the intervals overlap; layer 2: they separate
    mean = [[0.9, 0.0], [0.5, 0.6], [0.2, 0.8], [0.0, 1.0]]
    low = [[0.8, -0.1], [0.3, 0.4], [0.1, 0.7], [-0.1, 0.9]]
    high = [[1.0, 0.1], [0.7, 0.8], [0.3, 0.9], [0.1, 1.1]]
    grid = _grid(mean, low, high)
    assert grid_summary(grid, "normalized_effect", "root_value", handoff=True)["handoff_layer"] == 2
    assert "handoff_layer" not in grid_summary(grid, "normalized_effect", "root_value", handoff=False)


def test_query_chain_runs_report_no_handoff_and_root_value_runs_do(tmp_path):
    query = run_patch(_settings(tmp_path, counterfactual="query_chain"))
    assert "handoff_layer" not in query.summary
    root = run_patch(_settings(tmp_path, counterfactual="root_value"))
    assert "handoff_layer" in root.summary


# item 12: the control reports flip rates
def test_flip_is_one_when_the_prediction_leaves_the_original_answer():
    answer = AnswerTokens(original=1, counterfactual=1, candidates=(1, 2, 3))
    logits = torch.tensor([[0.0, 5.0, 1.0, 0.0, 9.0],   # argmax over candidates: token 1, the answer
                           [0.0, 1.0, 4.0, 0.0, 0.0]])  # token 2: the answer flipped
    values = cell_metrics(logits, answer, logits[0], ld_cf=0.0)
    assert values["flip"].tolist() == [0.0, 1.0]


def test_distractor_edits_never_write_the_answer_digit():
    pairs = make_pairs("distractor_value", 400, 8, 0, hops=2)
    assert all(p.counterfactual.text[p.changed_at] != str(p.original.answer) for p in pairs)


def test_control_runs_report_flip_rates_and_no_iia(tmp_path):
    outcome = run_patch(_settings(tmp_path, counterfactual="distractor_value", seq_len=6))
    summary, grid = outcome.summary, outcome.grid
    assert summary["metric"] == "flip" and "best_layer_by_column" not in summary
    assert "iia" not in grid.metrics
    worst = summary["flip_rate_worst_cell"]
    assert worst["flip"] == pytest.approx(float(np.nanmax(grid.mean["flip"])))
    column = grid.labels["role"].index(worst["role"])
    assert grid.mean["flip"][grid.labels["layer"].index(worst["layer"]), column] == pytest.approx(worst["flip"])


# item 13: AtP against the exact grid
def test_agreement_by_hand():
    from bindexp.interventions.methods.atp import agreement

    estimate = np.array([[5.0, 4.0, 3.0], [2.0, -1.0, 0.5]])
    exact = np.array([[5.0, 0.1, 3.0], [-4.0, 0.2, 0.3]])
    numbers = agreement(estimate, exact, k=3)
    # estimate's top 3 by |value|: 5, 4, 3 (cells 0, 1, 2); exact's: 5, -4, 3 (cells 0, 3, 2)
    assert numbers["precision_at_k"] == pytest.approx(2 / 3) and numbers["recall_at_k"] == pytest.approx(2 / 3)
    assert numbers["sign_agreement_exact_top_k"] == pytest.approx(2 / 3)  # cell 3: 2.0 vs -4.0
    expected = pd.Series(estimate.ravel()).rank().corr(pd.Series(exact.ravel()).rank())
    assert numbers["spearman_full"] == pytest.approx(expected)
    tied = agreement(np.array([3.0, 2.0, 2.0, 1.0]), np.array([3.0, 2.0, 1.0, 0.0]), k=2)
    assert tied["precision_at_k"] == pytest.approx(2 / 3) and tied["recall_at_k"] == pytest.approx(1.0)


def test_atp_verify_full_reports_precision_recall_and_the_full_grid_spearman(tmp_path):
    from bindexp.interventions.methods.atp import agreement

    outcome = run_patch(_settings(tmp_path, method="atp", verify="full", verify_top_k=4))
    summary = outcome.summary
    assert "atp_exact_spearman_top_k" not in summary and summary["atp_verify_k"] == 4
    exact = run_patch(_settings(tmp_path, method="exact", noise_floor_pairs=0)).grid
    numbers = agreement(outcome.grid.mean["normalized_effect"], exact.mean["normalized_effect"], 4)
    for name in ("precision_at_k", "recall_at_k", "spearman_full", "sign_agreement_exact_top_k"):
        assert summary[f"atp_{name}"] == pytest.approx(numbers[name], abs=1e-6), name
    assert 0 <= summary["atp_sign_agreement_top_k"] <= 1


# item 14: ratio of means, median, min_gap
def test_ratio_of_means_median_and_min_gap_from_the_per_pair_values(tiny_llama, tmp_path):
    shots = make_programs("binding", 1, 5, 0, stream="shots", hops=2)
    pairs = make_pairs("root_value", 6, 5, 0, hops=2, exclude={s.text for s in shots})
    rows = []
    grid = patch_grid(tiny_llama, pairs, shots=shots, on_pair=rows.append)
    effect = np.array([r["normalized_effect"] for r in rows], dtype=float)
    shift = np.array([r["logit_diff"] for r in rows], dtype=float) - np.array([r["ld_clean"] for r in rows])[:, None, None]
    gap = np.array([r["ld_cf"] - r["ld_clean"] for r in rows])
    np.testing.assert_allclose(grid.mean["normalized_effect_median"], np.nanmedian(effect, axis=0), rtol=1e-6, atol=1e-9)
    summary = grid_summary(grid, "normalized_effect")
    final = grid.labels["role"].index("final")
    entry = summary["best_layer_by_column"]["final"]
    li = grid.labels["layer"].index(entry["peak_layer"])
    assert entry["ratio_of_means"] == pytest.approx(shift[:, li, final].mean() / gap.mean(), rel=1e-5)
    assert entry["median"] == pytest.approx(float(np.median(effect[:, li, final])), rel=1e-6)
    # min_gap: pairs below it are left out and counted
    threshold = float(np.sort(np.abs(gap))[3])
    kept = patch_grid(tiny_llama, pairs, shots=shots, min_gap=threshold)
    assert kept.info["excluded_small_gap"] == int((np.abs(gap) < threshold).sum()) == 3
    assert kept.n.max() == 3


def test_min_gap_has_a_stated_default_and_is_counted_in_the_summary(tmp_path):
    assert PatchSettings().min_gap == 1.0
    assert "default 1.0" in PatchSettings.model_fields["min_gap"].description
    outcome = run_patch(_settings(tmp_path, min_gap=1e-3, num_programs=4))
    assert outcome.summary["min_gap"] == 1e-3
    assert outcome.summary["pairs_excluded_min_gap"] + outcome.summary["n_pairs"] == 4


# item 15: systematic programs by default, and the heuristic share said
def test_patch_runs_keep_systematic_programs_by_default_and_say_the_heuristic_share(tmp_path):
    assert PatchSettings().systematic_only is True
    default = run_patch(_settings(tmp_path, systematic_only=True, num_programs=6, seq_len=6))
    assert default.summary["heuristic_share"] == 0.0
    assert not any(p.original.meta["heuristic"] for p in default.pairs)
    mixed = run_patch(_settings(tmp_path, systematic_only=False, num_programs=6, seq_len=6))
    expected = sum(bool(p.original.meta["heuristic"]) for p in mixed.pairs) / len(mixed.pairs)
    assert mixed.summary["heuristic_share"] == pytest.approx(expected) and expected > 0


# item 16: the run's own noise floor
def test_exact_runs_store_a_noise_floor_and_flag_cells_within_it(tmp_path):
    outcome = run_patch(_settings(tmp_path, noise_floor_pairs=2))
    grid, summary = outcome.grid, outcome.summary
    floor, effect = grid.mean["noise_floor"], grid.mean["normalized_effect"]
    assert floor.shape == effect.shape and np.isfinite(floor).all()
    assert float(np.nanmax(floor)) < 1e-3  # fp32: rounding only
    within = int((np.abs(effect) <= floor)[np.isfinite(effect)].sum())
    assert summary["cells_within_noise_floor"] == within and summary["noise_floor_pairs"] == 2
    assert summary["dtype"] == "float32" and 0 < summary["noise_floor_patched_cells"] < summary["patched_cells"]
    again = Grid.load(outcome.out_dir)
    np.testing.assert_array_equal(again.mean["noise_floor"], floor.astype(np.float32))


def test_patch_runs_take_dtype_float32_and_say_so(tmp_path):
    outcome = run_patch(_settings(tmp_path, dtype="float32", noise_floor_pairs=1))
    assert outcome.summary["dtype"] == "float32"
    assert json.loads((outcome.out_dir / "grid.json").read_text())["settings"]["dtype"] == "float32"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_float32_lowers_the_noise_floor_of_bfloat16(tmp_path):
    floors = {dtype: run_patch(_settings(tmp_path, device="cuda", dtype=dtype, noise_floor_pairs=3))
              .grid.mean["noise_floor"] for dtype in ("float32", "bfloat16")}
    assert np.nanmax(floors["float32"]) < np.nanmax(floors["bfloat16"])


def test_bench_patch_prints_how_atp_finds_the_exact_cells(capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_patch", Path(__file__).parents[2] / "scripts" / "bench_patch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--model=tiny-random-llama", "--pairs=2", "--shots=1", "--seq_len=6", "--layer_step=2", "--top_k=4"])
    printed = capsys.readouterr().out
    assert "precision@k" in printed and "recall@k" in printed and "full-grid Spearman" in printed
