"""scripts/patch.py end to end on a tiny model with real offline W&B runs."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bindexp.interventions.results.grid import Grid
from bindexp.jobs.patch import PatchSettings, run_patch

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model=tiny-random-llama", "--seq_len=5", "--num_programs=3", "--shots=1", "--hops=2",
        "--only_correct=False", "--progress=False", "--min_gap=0"]


def _main(argv):
    spec = importlib.util.spec_from_file_location("patch_script", ROOT / "scripts" / "patch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _run_dir(printed):
    (line,) = [x for x in printed.splitlines() if "wandb sync" in x]
    return Path(line.split("wandb sync ")[1].strip())


def test_patch_script_logs_grid_table_image_and_artifact(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _main(TINY + ["--site=resid_pre", "--method=exact", "--wandb_mode=offline"]) == 0
    printed = capsys.readouterr().out
    run_dir = _run_dir(printed)
    files = run_dir / "files"
    grid = Grid.load(files)
    sidecar = json.loads((files / "grid.json").read_text())
    assert sidecar["settings"]["site"] == "resid_pre" and sidecar["axes"] == ["layer", "role"]
    assert (files / "heatmap.png").exists() and len((files / "pairs.jsonl").read_text().splitlines()) == 3
    wandb_cli = Path(sys.executable).with_name("wandb")
    inspected = json.loads(subprocess.run([str(wandb_cli), "leet", "inspect", "--summary", "--json", str(run_dir)],
                                          capture_output=True, text=True, check=True).stdout)
    summary = inspected["summary"]
    assert summary["pairs_used"] == 3 and inspected["config"]["method"] == "exact"
    root = grid.labels["role"].index("root_value")
    best = summary["best_layer_by_column"]["root_value"]
    assert best["peak_layer"] == int(np.nanargmax(grid.mean["normalized_effect"][:, root]))
    assert "grid" in {p.name.split("_")[0] for p in (files / "media" / "table").glob("*.json")}


@pytest.mark.parametrize("extra", [["--method=atp", "--verify_top_k=3"], ["--method=knockout", "--knockout_window=2"],
                                   ["--site=head", "--layers=[0, 3]"]])
def test_other_methods_run(tmp_path, extra):
    settings_args = TINY + ["--wandb_mode=disabled", f"--output_dir={tmp_path}"] + extra
    from bindexp.runs.settings import parse_settings

    outcome = run_patch(parse_settings(PatchSettings, settings_args))
    assert (outcome.out_dir / "grid.safetensors").exists()
    assert outcome.grid.n.max() == 3
    if "--method=atp" in extra:
        assert "atp_sign_agreement_top_k" in outcome.summary and "atp_exact_spearman_top_k" not in outcome.summary
    if "--site=head" in extra:
        assert outcome.grid.labels["layer"] == [0, 3] and outcome.grid.axes[-1] == "head"
    if "--method=knockout" in extra:  # the LD drop per column beside the headline (the probability drop)
        entry = outcome.summary["ld_drop_by_column"]["root_value"]
        column = outcome.grid.labels["role"].index("root_value")
        assert entry["ld_drop"] == pytest.approx(float(np.nanmax(outcome.grid.mean["ld_drop"][:, column])))


def test_same_settings_give_the_same_grid(tmp_path):
    settings = PatchSettings(model="tiny-random-qwen3", seq_len=5, num_programs=2, shots=0, hops=1,
                             only_correct=False, min_gap=0, wandb_mode="disabled", output_dir=str(tmp_path), progress=False)
    a, b = run_patch(settings), run_patch(settings)
    assert [p.to_dict() for p in a.pairs] == [p.to_dict() for p in b.pairs]
    np.testing.assert_array_equal(a.grid.mean["logit_diff"], b.grid.mean["logit_diff"])


@pytest.mark.parametrize("argv, fragment", [
    (["--site=neuron"], "site"),
    (["--counterfactual=chain_link", "--hops=1"], "hops >= 2"),
    (["--layers=[99]"], "layers"),
    (["--hops=9"], "hops"),
])
def test_bad_patch_settings_exit_with_one_line(tmp_path, argv, fragment):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "patch.py"), *TINY, "--wandb_mode=disabled",
                          *argv], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]


def test_patch_run_uses_a_robust_programs_file(tmp_path):
    from bindexp.jobs.robust import RobustSettings, find_robust
    from bindexp.runs.pairs import load_robust_programs

    robust = RobustSettings(models=["tiny-random-llama"], out=str(tmp_path / "robust.jsonl"), hops=[2], seq_len=[5],
                            num_programs=40, shots=1, wandb_mode="disabled", output_dir=str(tmp_path), progress=False)
    find_robust(robust)
    originals = load_robust_programs(tmp_path / "robust.jsonl", hops=2, seq_len=5)
    assert originals, "the tiny model answers some programs right"
    settings = PatchSettings(model="tiny-random-llama", seq_len=5, hops=2, shots=1, num_programs=3, only_correct=False,
                             min_gap=0, systematic_only=False,
                             programs_file=str(tmp_path / "robust.jsonl"), wandb_mode="disabled",
                             output_dir=str(tmp_path), progress=False)
    outcome = run_patch(settings)
    texts = {p.text for p in originals}
    assert outcome.pairs and all(pair.original.text in texts for pair in outcome.pairs)
    missing = settings.model_copy(update={"programs_file": str(tmp_path / "nope.jsonl")})
    with pytest.raises(Exception, match="does not exist"):
        run_patch(missing)


def test_control_counterfactual_moves_a_metric_at_its_edited_token(tmp_path):
    settings = PatchSettings(model="tiny-random-llama", seq_len=6, num_programs=3, shots=0, hops=2,
                             counterfactual="distractor_value", only_correct=False, wandb_mode="disabled",
                             output_dir=str(tmp_path), progress=False)
    outcome = run_patch(settings)
    assert all(p.changed_at == p.original.spans["distractor1_value"][0] for p in outcome.pairs)
    assert all(p.original.answer == p.counterfactual.answer for p in outcome.pairs)
    column = outcome.grid.labels["role"].index("distractor1_value")
    assert np.isfinite(outcome.grid.mean["p_original_change"][:, column]).all()
    assert np.isnan(outcome.grid.mean["normalized_effect"]).all()  # the two answers are one token
    assert outcome.summary["metric"] == "flip" and outcome.summary["flip_rate_by_column"]


@pytest.mark.parametrize("argv", [["--layers=[0, 99]", "--method=atp"], ["--method=knockout", "--knockout_window=10"]])
def test_out_of_range_layers_fail_before_any_run(tmp_path, argv):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "patch.py"), *TINY, "--wandb_mode=offline",
                          *argv], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "wandb").exists()


def test_counter_task_patches_from_the_cli(tmp_path, capsys):
    argv = ["--model=tiny-random-llama", "--task=counter", "--counterfactual=item_value", "--seq_len=4",
            "--num_programs=3", "--shots=1", "--only_correct=False", "--progress=False", "--wandb_mode=disabled", "--min_gap=0",
            f"--output_dir={tmp_path}"]
    assert _main(argv) == 0
    (sidecar,) = tmp_path.rglob("grid.json")
    grid = Grid.load(sidecar.parent)
    assert grid.labels["role"] == ["match_item", "other_item", "target", "query_var", "final"]
    assert grid.n.max() == 3 and json.loads(sidecar.read_text())["settings"]["task"] == "counter"
    records = [json.loads(line) for line in (sidecar.parent / "pairs.jsonl").read_text().splitlines()]
    assert all(r["original"].startswith("items = [") and r["kind"] == "item_value" for r in records)
    assert "on counter" in capsys.readouterr().out


@pytest.mark.parametrize("argv, fragment", [
    (["--task=counter", "--counterfactual=root_value"], "unknown counterfactual 'root_value' for task 'counter'"),
    (["--task=loop"], "cannot be patched"),
])
def test_patch_settings_read_the_task_declaration(argv, fragment):
    from bindexp.runs.settings import SettingsParseError, parse_settings

    no_hops = [arg for arg in TINY if not arg.startswith("--hops")]  # (counter has no hops: also refused)
    with pytest.raises(SettingsParseError, match=fragment):
        parse_settings(PatchSettings, no_hops + argv)
