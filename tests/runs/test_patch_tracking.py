"""A patch run as a W&B user sees it: name, per-layer history, artifact collection; not-run cells."""

import json

import numpy as np
from test_tracking import _history_keys, _of, _records

from bindexp.interventions.methods.exact import patch_grid
from bindexp.jobs.patch import PatchSettings, run_patch
from bindexp.tasks.counterfactuals import make_pairs


def test_patch_run_history_per_layer_and_artifact(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = PatchSettings(model="tiny-random-llama", min_gap=0, seq_len=5, num_programs=2, shots=1, hops=2,
                             only_correct=False, progress=False, wandb_mode="offline")
    outcome = run_patch(settings)
    records = _records(outcome.run_dir)
    (run,) = _of(records, "run")
    assert run["display_name"] == "patch tiny-random-llama binding h2 L5 resid_pre exact root_value s0"
    metrics = {m.get("glob_name") or m.get("name"): m for m in _of(records, "metric")}
    assert metrics["normalized_effect/*"]["step_metric"] == "layer"
    grid = outcome.grid
    root = grid.labels["role"].index("root_value")
    steps = {item["item"]["layer"]: item["item"] for item in _of(records, "history") if "layer" in item["item"]}
    assert sorted(steps) == grid.labels["layer"]
    for i, layer in enumerate(grid.labels["layer"]):
        assert steps[layer]["normalized_effect/root_value"] == float(grid.mean["normalized_effect"][i, root])
    assert "pairs_used" in _history_keys(records)
    (artifact,) = [a for a in _of(records, "artifact") if a["type"] == "patch-grid"]
    assert artifact["name"] == "patch-grid-tiny-random-llama-resid_pre"
    assert {"binding-h2-L5-resid_pre-exact-root_value-s0", "seed0", "latest"} <= set(artifact["aliases"])
    assert json.loads(artifact["metadata"])["model_info"]["family"] == "llama"


def test_exact_counts_the_cells_it_did_not_run(tiny_llama):
    pairs = make_pairs("root_value", 3, 5, seed=0, hops=2)
    grid = patch_grid(tiny_llama, pairs, site="resid_pre")
    not_run = grid.counts["not_run"]
    # expected from the pairs: a role column is skipped for a pair when its token comes before the edit
    from bindexp.interventions.engine.plan import tokenize_pairs

    tokenized, _ = tokenize_pairs(tiny_llama, pairs)
    for j, role in enumerate(grid.labels["role"]):
        before = sum(1 for t in tokenized if role in t.roles and t.roles[role] < t.first_diff)
        assert (not_run[:, j] == before).all(), role
    assert not_run.sum() > 0  # roles before the edit exist at hops=2 (the query chain's first line...)
    assert np.allclose(grid.mean["normalized_effect"][not_run == grid.n], 0.0)
