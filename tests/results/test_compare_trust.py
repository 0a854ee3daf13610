"""compare.py on real runs of a tiny model: only seeds are averaged, duplicates and broken runs are left out.

The runs are real eval runs (tiny-random-llama, W&B offline), a sweep-like set over shots [0, 2] x
seeds [0, 1], plus a repeat of one of them; expectations come from each run's own results.jsonl.
"""

import importlib.util
import json
import math
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.cli  # the command-line tier: scripts run as a user runs them

ROOT = Path(__file__).resolve().parents[2]
T975_ONE_DF = 12.706  # t(0.975, 1) from a printed table: two runs per cell


def _script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory):
    """W&B folder with 5 offline eval runs: shots {0, 2} x seed {0, 1}, then shots 0 / seed 0 again."""
    from bindexp.jobs.evaluate import EvalSettings, run_eval

    home = tmp_path_factory.mktemp("wandb-runs")
    runs = []
    with pytest.MonkeyPatch.context() as patch:
        for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
            (home / name.lower()).mkdir()
            patch.setenv(name, str(home / name.lower()))
        patch.setenv("WANDB_SILENT", "true")
        patch.delenv("WANDB_API_KEY", raising=False)
        for shots, seed in ((0, 0), (0, 1), (2, 0), (2, 1), (0, 0)):
            settings = EvalSettings(model="tiny-random-llama", hops=[1], seq_len=[4], num_programs=6, shots=shots,
                                    seed=seed, progress=False, wandb_mode="offline", group="trust-sweep",
                                    output_dir=str(home / "outputs"))
            outcome = run_eval(settings)
            results = (outcome.out_dir / "results.jsonl").read_text().splitlines()
            runs.append({"shots": shots, "seed": seed, "run_dir": outcome.run_dir,
                         "rows": [json.loads(line) for line in results]})
        import wandb

        wandb.teardown()
    return home / "wandb_dir" / "wandb", runs


def _run_id(run):
    return run["run_dir"].name.rsplit("-", 1)[-1]


def _accuracy(run):
    return sum(r["correct"] for r in run["rows"]) / len(run["rows"])


def test_only_seeds_are_averaged_settings_that_differ_become_columns(sweep_runs, tmp_path, capsys):
    runs_dir, runs = sweep_runs
    out = tmp_path / "cmp"
    assert _script("compare").main([f"--runs_dir={runs_dir}", "--group=trust-sweep", f"--out={out}"]) == 0
    err = capsys.readouterr().err
    assert "note: runs differ in shots besides the seed" in err
    tidy, table = pd.read_csv(out / "tidy.csv"), pd.read_csv(out / "aggregate.csv")
    assert {"shots", "rebinding", "template", "num_programs", "spacing"} <= set(tidy.columns)
    assert "shots" in table.columns and len(table) == 2  # one row per shots value, not one row of "4 runs"
    kept = runs[1:]  # the first run is repeated by the last: the newer one counts
    for shots in (0, 2):
        row = table[table["shots"] == shots].iloc[0]
        accuracies = [_accuracy(r) for r in kept if r["shots"] == shots]
        assert row["runs"] == 2 and row["n"] == 12
        mean = statistics.fmean(accuracies)
        half = T975_ONE_DF * statistics.stdev(accuracies) / math.sqrt(2)
        assert row["accuracy"] == pytest.approx(mean)
        assert row["ci_low"] == pytest.approx(max(0.0, mean - half), abs=1e-3)
        assert row["ci_high"] == pytest.approx(min(1.0, mean + half), abs=1e-3)
    assert "Student-t" in (out / "aggregate.md").read_text()


def test_any_setting_can_be_a_grouping_column(sweep_runs, tmp_path, capsys):
    runs_dir, runs = sweep_runs
    out = tmp_path / "cmp"
    assert _script("compare").main([f"--runs_dir={runs_dir}", "--by=[model, rebinding]", f"--out={out}"]) == 0
    table = pd.read_csv(out / "aggregate.csv")
    assert list(table.columns[:3]) == ["model", "rebinding", "shots"]
    assert set(table["rebinding"]) == {False} and sorted(table["shots"]) == [0, 2]


def test_a_repeated_run_is_left_out_as_a_duplicate_not_counted_as_a_seed(sweep_runs, tmp_path, capsys):
    runs_dir, runs = sweep_runs
    out = tmp_path / "cmp"
    assert _script("compare").main([f"--runs_dir={runs_dir}", f"--out={out}"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "duplicate" in line]
    assert len(lines) == 1 and _run_id(runs[0]) in lines[0] and _run_id(runs[4]) in lines[0]
    assert "1 runs left out" in captured.out or "1 run left out" in captured.out
    left_out = pd.read_csv(out / "left_out.csv")
    assert left_out["run_id"].tolist() == [_run_id(runs[0])]
    assert "duplicate of run " + _run_id(runs[4]) in left_out["reason"][0]
    tidy = pd.read_csv(out / "tidy.csv")
    assert sorted(tidy["run_id"]) == sorted(_run_id(r) for r in runs[1:])


def test_one_truncated_run_is_left_out_with_a_note_not_a_traceback(sweep_runs, tmp_path, capsys):
    runs_dir, runs = sweep_runs
    copy = tmp_path / "wandb"
    shutil.copytree(runs_dir, copy, symlinks=True)
    cut = copy / runs[1]["run_dir"].name / "files" / "results.jsonl"
    text = cut.read_text()
    cut.write_text(text[: len(text) // 2 + 7])  # a results file cut mid-line
    broken = copy / runs[2]["run_dir"].name / "files" / "summary.json"
    broken.write_text(broken.read_text()[:30])  # a summary cut mid-way
    out = tmp_path / "cmp"
    assert _script("compare").main([f"--runs_dir={copy}", f"--out={out}"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"skipped run {_run_id(runs[1])}" in err and "truncated" in err
    assert f"skipped run {_run_id(runs[2])}" in err and "summary.json" in err
    tidy = pd.read_csv(out / "tidy.csv")
    assert sorted(tidy["run_id"]) == sorted(_run_id(r) for r in (runs[3], runs[4]))
    reasons = dict(pd.read_csv(out / "left_out.csv")[["run_id", "reason"]].values)
    assert set(reasons) == {_run_id(r) for r in runs[:3]}


def test_a_cut_results_file_in_a_folder_written_without_wandb_is_left_out(tmp_path, capsys):
    from bindexp.jobs.evaluate import EvalSettings, run_eval

    outputs = tmp_path / "outputs"
    folders = []
    for seed in (0, 1, 2):
        folders.append(run_eval(EvalSettings(model="tiny-random-llama", hops=[1], seq_len=[4], num_programs=4,
                                             seed=seed, progress=False, wandb_mode="disabled",
                                             output_dir=str(outputs))).out_dir)
    results = folders[0] / "results.jsonl"
    results.write_text(results.read_text()[:-25])
    summary = folders[1] / "summary.json"
    summary.write_text(summary.read_text()[:-10])
    assert _script("compare").main([f"--runs_dir={outputs}", f"--out={tmp_path / 'cmp'}"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"skipped run {folders[0].name}" in err and f"skipped run {folders[1].name}" in err
    assert pd.read_csv(tmp_path / "cmp" / "tidy.csv")["run_id"].tolist() == [folders[2].name]
