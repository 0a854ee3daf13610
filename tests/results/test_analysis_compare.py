"""compare.py over analysis runs: numeric summary values averaged over seeds, other settings kept apart."""

import json
import math

import pandas as pd
import pytest

from bindexp.results.tables import flat_numbers


def test_flat_numbers_walks_nested_summaries():
    summary = {"layer": 3, "das": {"k1": {"iia": 0.5, "n": 4}}, "where": "root_value@0-2", "ok": True,
               "by_layer": [0.1, 0.2], "none": None}
    assert dict(flat_numbers(summary)) == {"layer": 3.0, "das.k1.iia": 0.5, "das.k1.n": 4.0, "ok": 1.0}


def test_compare_averages_lens_runs_over_seeds(tmp_path):
    from bindexp.jobs.lens import LensSettings, run_lens
    from bindexp.results.compare import CompareSettings, run_compare

    outputs = tmp_path / "outputs"
    base = dict(model="tiny-random-llama", seq_len=5, hops=1, shots=1, num_programs=3, only_correct=False,
                systematic_only=False, progress=False, wandb_mode="disabled", output_dir=str(outputs))
    summaries = [run_lens(LensSettings(**base, seed=seed)).summary for seed in (0, 1)]
    other = run_lens(LensSettings(**base, seed=0, readable_threshold=0.7)).summary
    outcome = run_compare(CompareSettings(runs_dir=str(outputs), out=str(tmp_path / "cmp")))
    assert (tmp_path / "cmp" / "analysis_scalars.csv") in outcome.files
    table = pd.read_csv(tmp_path / "cmp" / "analysis_aggregate.csv")
    assert set(table["job_type"]) == {"lens"} and "readable_threshold" in table.columns  # the setting that differs
    rows = table[table["key"] == "final_p_answer"].set_index("readable_threshold")
    assert rows.loc[0.5, "runs"] == 2 and rows.loc[0.7, "runs"] == 1
    assert rows.loc[0.5, "mean"] == pytest.approx((summaries[0]["final_p_answer"] + summaries[1]["final_p_answer"]) / 2)
    assert rows.loc[0.7, "mean"] == pytest.approx(other["final_p_answer"]) and math.isnan(rows.loc[0.7, "ci_low"])
    low, high = rows.loc[0.5, "ci_low"], rows.loc[0.5, "ci_high"]
    assert low <= rows.loc[0.5, "mean"] <= high
    scalars = pd.read_csv(tmp_path / "cmp" / "analysis_scalars.csv")
    assert set(scalars["seed"]) == {0, 1} and json.loads(scalars["settings"].iloc[0])["model"] == "tiny-random-llama"


def test_compare_averages_circuit_runs_faithfulness_over_seeds(tmp_path):
    from bindexp.jobs.circuit import CircuitSettings, run_circuit
    from bindexp.results.compare import CompareSettings, run_compare

    outputs = tmp_path / "outputs"
    base = dict(model="tiny-random-llama", seq_len=5, hops=2, shots=1, num_programs=2, only_correct=False,
                systematic_only=False, progress=False, wandb_mode="disabled", output_dir=str(outputs), min_gap=0,
                top_n=3, verify_top_k=3, minimality=False)
    summaries = [run_circuit(CircuitSettings(**base, seed=seed)).summary for seed in (0, 1)]
    run_compare(CompareSettings(runs_dir=str(outputs), out=str(tmp_path / "cmp")))
    table = pd.read_csv(tmp_path / "cmp" / "analysis_aggregate.csv")
    row = table[(table["job_type"] == "circuit") & (table["key"] == "faithfulness.mean")].iloc[0]
    assert row["runs"] == 2
    assert row["mean"] == pytest.approx(sum(s["faithfulness"]["mean"] for s in summaries) / 2)
