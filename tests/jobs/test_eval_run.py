"""scripts/eval.py end to end with a tiny model and a real offline W&B run."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bindexp.errors import TaskError
from bindexp.io.folder import RESULTS_FILE, SUMMARY_FILE
from bindexp.jobs.evaluate import EvalSettings, run_eval
from bindexp.runs.conditions import eval_conditions

ROOT = Path(__file__).resolve().parents[2]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _inspect(run_dir: Path) -> dict:
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb_cli), "leet", "inspect", "--summary", "--json", str(run_dir)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_eval_script_makes_an_offline_run_that_reads_back(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _script("eval").main([
        "--model=tiny-random-llama", "--task=binding", "--hops=[1, 2]", "--seq_len=6",
        "--num_programs=12", "--seed=3", "--shots=2", "--progress=False", "--tags=[test]",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "hops" in printed and "wandb sync" in printed
    (sync_line,) = [line for line in printed.splitlines() if "wandb sync" in line]
    run_dir = Path(sync_line.split("wandb sync ")[1].strip())
    inspected = _inspect(run_dir)
    summary, config = inspected["summary"], inspected["config"]
    results = pd.read_json(run_dir / "files" / RESULTS_FILE, lines=True)
    assert len(results) == 24 == summary["n_programs"]
    assert summary["accuracy"] == pytest.approx(results["correct"].mean())
    for hops, group in results.groupby("hops"):
        assert summary["by_hops"][str(hops)]["accuracy"] == pytest.approx(group["correct"].mean())
        assert summary["by_hops"][str(hops)]["n"] == 12
    local = json.loads((run_dir / "files" / SUMMARY_FILE).read_text())
    assert local["accuracy"] == pytest.approx(summary["accuracy"])
    assert config["model"] == "tiny-random-llama" and config["hops"] == [1, 2]
    assert config["model_info"]["revision"] == "random-init-seed0"
    assert inspected["exit_code"] == 0
    tables = {p.name.split("_")[0] for p in (run_dir / "files" / "media" / "table").glob("*.table.json")}
    assert "programs" in tables
    assert list((run_dir / "files" / "media" / "images").glob("accuracy_plot*.png"))


def test_results_are_deterministic_and_match_the_programs(tmp_path):
    settings = EvalSettings(model="tiny-random-qwen3", hops=[3], seq_len=[5], num_programs=6, shots=1,
                            wandb_mode="disabled", output_dir=str(tmp_path), progress=False)
    first, second = run_eval(settings), run_eval(settings)
    pd.testing.assert_frame_equal(first.results, second.results)
    (condition,) = eval_conditions(settings)
    assert list(first.results["program"]) == [p.text for p in condition.programs]
    assert list(first.results["answer"]) == [str(p.answer) for p in condition.programs]
    assert (first.out_dir / RESULTS_FILE).exists() and first.run_dir is None


def test_systematic_only_keeps_heuristic_failures(tmp_path):
    settings = EvalSettings(model="tiny-random-llama", seq_len=[4], num_programs=10, systematic_only=True,
                            wandb_mode="disabled", output_dir=str(tmp_path), progress=False)
    (condition,) = eval_conditions(settings)
    assert len(condition.programs) == 10
    assert not any(p.meta["heuristic"] for p in condition.programs)


@pytest.mark.parametrize("seq_len, hops", [(1, 1), (2, 1), (4, 3), (5, 4)])
def test_systematic_only_refuses_up_front_where_no_program_qualifies(seq_len, hops):
    settings = EvalSettings(seq_len=[seq_len], hops=[hops], num_programs=5, systematic_only=True)
    with pytest.raises(TaskError, match=f"seq_len={seq_len}, hops={hops}"):
        eval_conditions(settings)


@pytest.mark.parametrize("seq_len, hops", [(3, 1), (5, 3), (6, 4)])
def test_systematic_only_just_above_that_still_finds_programs(seq_len, hops):
    (condition,) = eval_conditions(EvalSettings(seq_len=[seq_len], hops=[hops], num_programs=5, systematic_only=True))
    assert len(condition.programs) == 5 and not any(p.meta["heuristic"] for p in condition.programs)


def test_open_ended_task_is_generated_and_parsed(tmp_path):
    settings = EvalSettings(model="tiny-random-llama", task="loop", seq_len=[3], num_programs=4,
                            wandb_mode="disabled", output_dir=str(tmp_path), progress=False, max_new_tokens=3)
    outcome = run_eval(settings)
    assert outcome.results["margin"].isna().all()
    assert outcome.results["hops"].isna().all() and len(outcome.results) == 4


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--model=not-a-model"], "unknown model"),
        (["--hops=7"], "hops"),
        (["--task=sorting"], "unknown task"),
        (["--hops=4", "--seq_len=2"], "cannot exceed"),
        (["--template=nope"], "unknown template"),
    ],
)
def test_bad_settings_exit_non_zero_with_one_line(argv, fragment, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval.py"), "--model=tiny-random-llama",
                          "--wandb_mode=disabled", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("error:")
    assert not (tmp_path / "wandb").exists()
