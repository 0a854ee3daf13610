"""compare under hostile or surprising input (issue 22): every run it does not use is listed with
the reason (a cut results.jsonl, a config.json of the wrong shape, a job type it does not read),
runs of different bindexp versions are grouped apart, nothing to compare is an error, and training
runs are compared (one row per run, their metrics over seeds, the validation curves' band).

The runs are real: eval runs of the tiny random model and tiny training runs, W&B off; expected
values are computed here from each run's own files."""

from __future__ import annotations

import json
import math
import runpy
import shutil
import statistics
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[2]
T975_TWO_DF = 4.302652729911275  # t(0.975, 2), from a printed table: three runs
Z = 1.959963984540054


def _script(name):
    """scripts/<name>.py as a module (its `main(argv)`)."""
    return SimpleNamespace(**runpy.run_path(str(ROOT / "scripts" / f"{name}.py")))


def _compare(capsys, *args) -> tuple[int, str]:
    code = _script("compare").main(list(args))
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def eval_runs(tmp_path_factory) -> Path:
    """Two eval runs (seeds 0, 1) of the tiny model, W&B off, in one folder."""
    from bindexp.jobs.evaluate import EvalSettings, run_eval

    out = tmp_path_factory.mktemp("evals")
    for seed in (0, 1):
        run_eval(EvalSettings(model="tiny-random-llama", hops=[1], seq_len=[4], num_programs=6, seed=seed,
                              progress=False, wandb_mode="disabled", output_dir=str(out), run_name=f"seed{seed}"))
    return out


def _copy(eval_runs: Path, tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(eval_runs, runs)
    return runs


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def _left_out(out: Path) -> dict[str, str]:
    return dict(pd.read_csv(out / "left_out.csv")[["run_id", "reason"]].itertuples(index=False))


def test_a_results_file_cut_at_a_line_boundary_is_left_out_as_truncated(eval_runs, tmp_path, capsys):
    runs = _copy(eval_runs, tmp_path)
    lines = (runs / "seed1" / "results.jsonl").read_text().splitlines(keepends=True)
    (runs / "seed1" / "results.jsonl").write_text("".join(lines[:3]))  # every line whole: only the count tells
    code, err = _compare(capsys, f"--runs_dir={runs}", f"--out={tmp_path / 'cmp'}")
    assert code == 0, err
    assert _left_out(tmp_path / "cmp") == {"seed1": "results.jsonl has 3 results but its summary counts 6 programs "
                                                    "(truncated?)"}
    table = pd.read_csv(tmp_path / "cmp" / "aggregate.csv")
    kept = _rows(runs / "seed0")
    assert table["runs"].tolist() == [1] and table["n"].tolist() == [6]
    assert table["accuracy"].iloc[0] == pytest.approx(sum(r["correct"] for r in kept) / 6)


def test_runs_of_different_versions_are_grouped_apart_unless_mixed(eval_runs, tmp_path, capsys):
    runs = _copy(eval_runs, tmp_path)
    config = json.loads((runs / "seed1" / "config.json").read_text())
    config["extra"]["provenance"]["bindexp_version"] = "0.0.9"
    (runs / "seed1" / "config.json").write_text(json.dumps(config))
    code, err = _compare(capsys, f"--runs_dir={runs}", f"--out={tmp_path / 'apart'}")
    assert code == 0 and "bindexp versions 0.0.9, 0.1.0: grouped apart" in err
    apart = pd.read_csv(tmp_path / "apart" / "aggregate.csv")
    assert sorted(apart["bindexp_version"]) == ["0.0.9", "0.1.0"] and apart["runs"].tolist() == [1, 1]
    code, err = _compare(capsys, f"--runs_dir={runs}", f"--out={tmp_path / 'mixed'}", "--mix_versions=True")
    assert code == 0 and "averaged together" in err
    mixed = pd.read_csv(tmp_path / "mixed" / "aggregate.csv")
    assert mixed["runs"].tolist() == [2] and mixed["n"].tolist() == [12]
    correct = sum(r["correct"] for seed in (0, 1) for r in _rows(runs / f"seed{seed}"))
    assert mixed["pooled_accuracy"].iloc[0] == pytest.approx(correct / 12)


def _folder(runs: Path, name: str, config, summary) -> None:
    (runs / name).mkdir()
    (runs / name / "config.json").write_text(json.dumps(config))
    (runs / name / "summary.json").write_text(json.dumps(summary))


def test_every_run_not_used_is_listed_with_its_reason(eval_runs, tmp_path, capsys):
    runs = _copy(eval_runs, tmp_path)
    _folder(runs, "robust-run", {"job_type": "robust", "settings": {"seed": 0}, "extra": {}}, {"kept": 3})
    _folder(runs, "future-run", {"job_type": "future_job", "settings": {"seed": 0}, "extra": {}}, {"score": 1.0})
    _folder(runs, "list-config", [1, 2, 3], {"accuracy": 1.0})
    _folder(runs, "text-settings", {"job_type": "eval", "settings": "model=x", "extra": {}}, {"accuracy": 1.0})
    code, err = _compare(capsys, f"--runs_dir={runs}", f"--out={tmp_path / 'cmp'}")
    assert code == 0 and "Traceback" not in err, err
    left = _left_out(tmp_path / "cmp")
    assert left["robust-run"].startswith("job type 'robust' is not compared")
    assert left["future-run"].startswith("job type 'future_job' is not compared")
    assert left["list-config"] == "config.json: not a run's config (a JSON object with job_type, settings, extra)"
    assert left["text-settings"] == "config.json: settings is not a JSON object"
    assert set(pd.read_csv(tmp_path / "cmp" / "tidy.csv")["run_id"]) == {"seed0", "seed1"}


def test_nothing_to_compare_is_one_error_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    _folder(runs, "robust-run", {"job_type": "robust", "settings": {"seed": 0}, "extra": {}}, {"kept": 3})
    code, err = _compare(capsys, f"--runs_dir={runs}", f"--out={tmp_path / 'cmp'}")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "nothing to compare" in errors[0] and "Traceback" not in err
    assert _left_out(tmp_path / "cmp")["robust-run"].startswith("job type 'robust' is not compared")
    assert [p.name for p in (tmp_path / "cmp").iterdir()] == ["left_out.csv"]  # no empty tables
    code, err = _compare(capsys, f"--runs_dir={runs}", "--job_type=train", f"--out={tmp_path / 'train'}")
    assert code == 2 and "no finished runs matched" in err


# ---------------------------------------------------------------- training runs

@pytest.fixture(scope="module")
def training_runs(tmp_path_factory) -> Path:
    """Three tiny training runs (seeds 0-2), W&B off."""
    from bindexp.jobs.train import TrainSettings, run_train
    from bindexp.runs.settings import parse_settings

    out = tmp_path_factory.mktemp("trained")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed in (0, 1, 2):
            run_train(parse_settings(TrainSettings, [
                "--n_layers=1", "--d_model=16", "--n_heads=2", "--d_ff=32", "--seq_len=3", "--hops=[1, 2]",
                "--spacing=compact", "--n_eval=16", "--batch_size=8", "--progress=False", "--wandb_mode=disabled",
                "--steps=8", "--warmup_steps=1", "--eval_every=4", "--checkpoint_every=8", f"--seed={seed}",
                f"--output_dir={out}", f"--run_name=seed{seed}", "--group=tiny"]))
    finally:
        torch.set_num_threads(before)
    return out


def _wilson(correct: int, n: int) -> tuple[float, float]:
    p = correct / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def test_training_runs_are_compared_row_by_row_and_over_seeds(training_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, err = _compare(capsys, f"--runs_dir={training_runs}", "--job_type=train", f"--out={out}")
    assert code == 0, err
    summaries = {seed: json.loads((training_runs / f"seed{seed}" / "summary.json").read_text()) for seed in (0, 1, 2)}
    runs = pd.read_csv(out / "train_runs.csv").set_index("seed")
    assert sorted(runs.index) == [0, 1, 2]
    for seed, summary in summaries.items():
        row = runs.loc[seed]
        assert row["steps_done"] == 8 and row["test/accuracy_n"] == summary["test/accuracy_n"] == 16
        assert row["test/accuracy"] == pytest.approx(summary["test/accuracy"])
        assert row["test/accuracy_hops2_ci_low"] == pytest.approx(summary["test/accuracy_hops2_ci_low"])
    table = pd.read_csv(out / "train_aggregate.csv").set_index("metric")
    values = [summaries[s]["test/accuracy"] for s in (0, 1, 2)]
    row = table.loc["test/accuracy"]
    assert row["runs"] == 3 and row["n"] == 48 and row["mean"] == pytest.approx(statistics.fmean(values))
    half = T975_TWO_DF * statistics.stdev(values) / math.sqrt(3)
    if half > 0:
        assert row["ci_low"] == pytest.approx(max(0.0, statistics.fmean(values) - half))
        assert row["ci_high"] == pytest.approx(min(1.0, statistics.fmean(values) + half))
    correct = sum(round(v * 16) for v in values)
    assert row["pooled"] == pytest.approx(correct / 48)
    assert (row["pooled_ci_low"], row["pooled_ci_high"]) == pytest.approx(_wilson(correct, 48))
    assert {"heuristic_step", "past_heuristic_step", "systematic_step"} <= set(table.index)
    assert (out / "training_by_hops.png").stat().st_size > 10_000


def test_the_training_figure_band_runs_from_the_lowest_to_the_highest_seed(training_runs):
    from bindexp.results.records import local_records
    from bindexp.results.training import history_bands

    ((label, n_runs, frame),) = history_bands(local_records(training_runs))
    assert n_runs == 3 and label == "all runs"
    histories = [[json.loads(line) for line in (training_runs / f"seed{s}" / "history.jsonl").read_text().splitlines()]
                 for s in (0, 1, 2)]
    for key in ("validation/accuracy_hops1", "validation/accuracy_hops2", "validation/accuracy_heuristic_wrong"):
        for step in (4, 8):
            values = [row[key] for history in histories for row in history
                      if row.get("train/step") == step and key in row]
            cell = frame[(frame["key"] == key) & (frame["step"] == step)].iloc[0]
            assert len(values) == 3 and cell["runs"] == 3
            assert (cell["mean"], cell["low"], cell["high"]) == pytest.approx(
                (statistics.fmean(values), min(values), max(values)))
