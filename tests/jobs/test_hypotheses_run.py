"""The hypotheses job: every hypothesis scored on the patch grids' own outputs, its files, its
W&B run, and bad requests refused with one line before any model loads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model=tiny-random-llama", "--seq_len=5", "--hops=2", "--shots=1", "--only_correct=False",
        "--systematic_only=False", "--progress=False"]


@pytest.mark.parametrize("kind", ["swap_lines", "root_value"])
def test_the_job_scores_every_hypothesis_on_the_patch_grids_own_outputs(tmp_path, kind):
    """The hypotheses run on a tiny model: its pointer-following `value` IIA at (layer 0, root_value)
    under root_value equals the exact grid's IIA there (both score the counterfactual's answer), and
    every hypothesis x variable is scored at every cell of every kind."""
    from bindexp.jobs.hypotheses import HypothesesSettings, run_hypotheses

    settings = HypothesesSettings(model="tiny-random-llama", seq_len=5, hops=2, shots=1, num_programs=4,
                                  only_correct=False, systematic_only=False, progress=False, wandb_mode="disabled",
                                  output_dir=str(tmp_path), counterfactuals=[kind])
    outcome = run_hypotheses(settings)
    cells, grid = outcome.cells, outcome.grids[kind]
    assert set(cells["hypothesis"]) == {"pointer_following", "direct_lookup", "positional", "heuristic"}
    roles = grid.labels["role"]
    assert len(outcome.verdicts) == len(grid.labels["layer"]) * len(roles)
    if kind == "root_value":
        cell = cells[(cells["hypothesis"] == "pointer_following") & (cells["variable"] == "value")
                     & (cells["layer"] == 0) & (cells["role"] == "root_value")].iloc[0]
        assert cell["iia"] == pytest.approx(float(grid.mean["iia"][0, roles.index("root_value")]))
        assert cell["n"] == 4
    for name in ("hypotheses_cells.csv", "verdicts.csv", "verdict_regions.csv", "hypotheses.json", "verdicts.png",
                 "summary.json"):
        assert (outcome.out_dir / name).exists(), name
    assert set(outcome.summary["verdicts"]) == {kind} and outcome.summary["decision_rule"].startswith("Wilson")


def test_the_script_logs_a_wandb_run(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "hypotheses.py"), *TINY, "--num_programs=3",
                          "--counterfactuals=[rename_variable]", "--wandb_mode=offline"], capture_output=True, text=True,
                         cwd=tmp_path, env={**__import__("os").environ, "WANDB_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "rename_variable (3 pairs)" in out.stdout
    files = next((tmp_path / "wandb").glob("offline-run-*/files"))
    assert json.loads((files / "config.json").read_text())["job_type"] == "hypotheses"
    assert (files / "verdicts.csv").exists() and (files / "grids" / "rename_variable" / "pairs.jsonl").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--hypotheses=[pointer_following, nope]"], "at least two"),
    (["--counterfactuals=[nope]"], "nope"),
    (["--counterfactuals=[move_root]", "--hops=1"], "hops >= 2"),
    (["--counterfactuals=[swap_lines]", "--rebinding=True"], "rebinding"),
    (["--method=atp"], "exact role grids"),
    (["--iia_threshold=0"], "iia_threshold"),
])
def test_bad_requests_exit_with_one_line(tmp_path, argv, fragment):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "hypotheses.py"), *TINY, "--wandb_mode=disabled",
                          f"--output_dir={tmp_path / 'out'}", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], out.stderr
    assert not (tmp_path / "out").exists()  # nothing ran, no run folder


def test_compare_averages_hypotheses_summaries_over_seeds(tmp_path):
    import pandas as pd

    from bindexp.jobs.hypotheses import HypothesesSettings, run_hypotheses
    from bindexp.results.compare import CompareSettings, run_compare

    base = dict(model="tiny-random-llama", seq_len=5, hops=2, shots=1, num_programs=3, only_correct=False,
                systematic_only=False, progress=False, wandb_mode="disabled", output_dir=str(tmp_path / "runs"),
                counterfactuals=["root_value"])
    summaries = [run_hypotheses(HypothesesSettings(**base, seed=seed)).summary for seed in (0, 1)]
    run_compare(CompareSettings(runs_dir=str(tmp_path / "runs"), out=str(tmp_path / "cmp")))
    table = pd.read_csv(tmp_path / "cmp" / "analysis_aggregate.csv")
    row = table[(table["job_type"] == "hypotheses") & (table["key"] == "verdicts.root_value.cells.no effect")].iloc[0]
    assert row["runs"] == 2
    expected = sum(s["verdicts"]["root_value"]["cells"]["no effect"] for s in summaries) / 2
    assert row["mean"] == pytest.approx(expected)
