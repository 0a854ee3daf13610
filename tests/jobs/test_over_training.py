"""scripts/checkpoints.py: patch grids on several checkpoints of a tiny training run, as one W&B run."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bindexp.jobs.patch import PatchSettings, run_patch
from bindexp.jobs.train import TrainSettings, run_train
from bindexp.runs.settings import parse_settings

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["--n_layers=2", "--d_model=32", "--n_heads=2", "--d_ff=64", "--seq_len=3", "--hops=[1, 2]",
         "--spacing=compact", "--n_eval=16", "--batch_size=8", "--progress=False", "--wandb_mode=disabled",
         "--steps=30", "--warmup_steps=3", "--eval_every=10", "--checkpoint_every=10", "--keep_checkpoints=5",
         "--threads=1"]
PATCH = ["--hops=2", "--num_programs=3", "--progress=False", "--device=cpu", "--systematic_only=False"]  # 3-line programs


def _main(argv):
    spec = importlib.util.spec_from_file_location("checkpoints_script", ROOT / "scripts" / "checkpoints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained 30 steps, checkpoints at 10, 20, 30; its run folder and checkpoint folder."""
    base = tmp_path_factory.mktemp("trained")
    before = torch.get_num_threads()
    outcome = run_train(parse_settings(TrainSettings, [*TRAIN, f"--checkpoint_dir={base / 'ckpt'}",
                                                       f"--output_dir={base / 'out'}"]))
    torch.set_num_threads(before)
    return outcome


def _direct_grid(checkpoint: Path, out: Path):
    """An independent patch run on one checkpoint, with the training run's program settings spelled out."""
    settings = PatchSettings(model=str(checkpoint), hops=2, seq_len=3, spacing="compact", num_programs=3, shots=0,
                             only_correct=False, systematic_only=False, min_gap=0, progress=False, device="cpu",
                             wandb_mode="disabled",
                             output_dir=str(out))
    return run_patch(settings).grid.to_frame()


def test_steps_and_aliases_give_one_block_per_checkpoint_equal_to_direct_patch_runs(trained, tmp_path, monkeypatch,
                                                                                   capsys):
    monkeypatch.chdir(tmp_path)
    ckpt = trained.checkpoint_dir
    assert _main([f"--checkpoints={ckpt}", "--steps=[10, latest]", "--wandb_mode=offline", *PATCH]) == 0
    printed = capsys.readouterr().out
    (line,) = [x for x in printed.splitlines() if "wandb sync" in x]
    run_dir = Path(line.split("wandb sync ")[1].strip())
    files = run_dir / "files"
    table = pd.read_csv(files / "over_training.csv")
    assert list(table.columns) == ["step", "role", "layer", "metric", "value", "ci_low", "ci_high", "n"]
    assert list(dict.fromkeys(table["step"])) == [10, 30]  # latest is step 30; each block once, in step order
    for step in (10, 30):
        direct = _direct_grid(ckpt / f"step-{step:06d}", tmp_path / f"direct{step}")
        block = table[table["step"] == step].reset_index(drop=True)
        assert len(block) == len(direct) == 2 * 9  # 2 layers x 9 roles
        assert list(block["role"]) == list(direct["role"]) and list(block["layer"]) == list(direct["layer"])
        np.testing.assert_allclose(block["value"], direct["normalized_effect"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(block["ci_low"], direct["normalized_effect_ci_low"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(block["ci_high"], direct["normalized_effect_ci_high"], rtol=1e-12, atol=0)
        assert (block["n"] == 3).all() and (block["metric"] == "normalized_effect").all()
        assert (files / "checkpoint_runs" / f"step-{step:06d}" / "grid.safetensors").exists()
    assert (files / "over_training.png").read_bytes()[:4] == b"\x89PNG"

    wandb_cli = Path(sys.executable).with_name("wandb")
    inspected = json.loads(subprocess.run([str(wandb_cli), "leet", "inspect", "--summary", "--json", str(run_dir)],
                                          capture_output=True, text=True, check=True).stdout)
    config, summary = inspected["config"], inspected["summary"]
    assert config["checkpoint_steps"] == [10, 30] and sorted(config["from_training"]) == [
        "distractor_chains", "max_distractor_depth", "seq_len", "spacing"]
    assert json.loads((files / "config.json").read_text())["job_type"] == "over_training"
    trained_summary = json.loads((trained.out_dir / "summary.json").read_text())
    for key in ("heuristic_plateau", "past_heuristic_step", "systematic_step"):
        assert summary.get(key) == trained_summary[key]
    root = table[(table["step"] == 30) & (table["role"] == "root_value")]
    best = summary["by_step"]["30"]["best_layer_by_column"]["root_value"]
    assert best["normalized_effect"] == pytest.approx(root["value"].max(), rel=1e-12)
    assert best["peak_layer"] == int(root.loc[root["value"].idxmax(), "layer"])
    index = json.loads((ckpt / "checkpoints.json").read_text())
    assert summary["by_step"]["30"]["aliases"] == [a for a in ("latest", "best") if index[a] == "step-000030"]
    assert summary["by_step"]["10"]["aliases"] == [a for a in ("latest", "best") if index[a] == "step-000010"]


def test_all_and_best_choose_from_the_checkpoints_kept(trained, tmp_path):
    from bindexp.jobs.over_training import OverTrainingSettings, run_over_training

    common = dict(checkpoints=str(trained.checkpoint_dir), hops=2, num_programs=2, systematic_only=False, progress=False,
                  device="cpu", wandb_mode="disabled", output_dir=str(tmp_path), metric="logit_diff")
    everything = run_over_training(OverTrainingSettings(steps=["all"], **common))
    assert sorted(set(everything.table["step"])) == [10, 20, 30]
    assert set(everything.table["metric"]) == {"logit_diff"} and everything.summary["metric"] == "logit_diff"
    best_name = json.loads((trained.checkpoint_dir / "checkpoints.json").read_text())["best"]
    best = run_over_training(OverTrainingSettings(steps=["best"], **common))
    assert list(set(best.table["step"])) == [int(best_name.split("-")[1])]
    same = everything.table[everything.table["step"] == int(best_name.split("-")[1])].reset_index(drop=True)
    pd.testing.assert_frame_equal(best.table, same)


@pytest.mark.parametrize("args, fragment", [
    (["--steps=[15]"], "no checkpoint at step 15"),
    (["--steps=[newest]"], "unknown checkpoint 'newest'"),
    (["--steps=[]"], "steps is empty"),
    (["--model=tiny-random-llama"], "the checkpoints are the models"),
    (["--metric=accuracy"], "metric 'accuracy'"),
    (["--positions=all"], "positions must be roles"),
    (["--routes=[final-root_value]"], "is not 'destination<-source'"),
    (["--routes=[final<-nowhere]"], "'nowhere' is not a token role"),
])
def test_bad_choices_fail_in_one_line_before_any_model_loads(trained, tmp_path, capsys, args, fragment):
    code = _main([f"--checkpoints={trained.checkpoint_dir}", f"--output_dir={tmp_path / 'out'}",
                  "--wandb_mode=disabled", *PATCH, *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_folder_without_checkpoints_json_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = _main([f"--checkpoints={tmp_path / 'empty'}", f"--output_dir={tmp_path / 'out'}", "--wandb_mode=disabled",
                  *PATCH])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "no checkpoints.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_deleted_from_disk_is_refused(trained, tmp_path, capsys):
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(trained.checkpoint_dir, copy)
    shutil.rmtree(copy / "step-000020")
    code = _main([f"--checkpoints={copy}", "--steps=all", f"--output_dir={tmp_path / 'out'}", "--wandb_mode=disabled",
                  *PATCH])
    err = capsys.readouterr().err
    assert code == 2 and "step-000020" in err and "missing" in err


def _refusal(capsys, *argv) -> str:
    code = _main([*argv, "--wandb_mode=disabled", *PATCH])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_layers_are_checked_against_every_checkpoint_not_only_the_first(trained, tmp_path, capsys):
    """A folder whose newest checkpoint has 1 layer and the others 2 (what two writers once left):
    --layers=[1] fits steps 10 and 20, not 30, and is refused before any model loads."""
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(trained.checkpoint_dir, copy)
    config = json.loads((copy / "step-000030" / "config.json").read_text())
    (copy / "step-000030" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    line = _refusal(capsys, f"--checkpoints={copy}", "--steps=all", "--layers=[1]", f"--output_dir={tmp_path / 'out'}")
    assert f"{copy / 'step-000030'}: layers must lie in 0..0, got [1]" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, fragment", [("cut", "state.json: not a readable trainer state"),
                                              ("list", "state.json: not a trainer state")])
def test_a_damaged_trainer_state_is_one_line_not_phases_of_none(trained, tmp_path, capsys, damage, fragment):
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(trained.checkpoint_dir, copy)
    state = copy / "step-000030" / "trainer" / "state.json"
    state.write_text(state.read_text()[:200] if damage == "cut" else "[]")
    line = _refusal(capsys, f"--checkpoints={copy}", "--steps=[10]", f"--output_dir={tmp_path / 'out'}")
    assert fragment in line and not (tmp_path / "out").exists()


def test_an_index_naming_a_folder_outside_is_refused(trained, tmp_path, capsys):
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(trained.checkpoint_dir, copy)
    index = json.loads((copy / "checkpoints.json").read_text())
    (copy / "checkpoints.json").write_text(json.dumps({**index, "steps": [*index["steps"], "../elsewhere"]}))
    line = _refusal(capsys, f"--checkpoints={copy}", "--steps=all", f"--output_dir={tmp_path / 'out'}")
    assert "checkpoints.json: steps entry '../elsewhere' is not a checkpoint name" in line


def test_the_plot_marks_the_phase_boundaries_in_both_panels():
    from bindexp.jobs.over_training import TrainingRecord
    from bindexp.plots.training import plot_over_training

    per_step = {step: {"best_layer_by_column": {"root_value": {"layer": 0, "normalized_effect": 1.0},
                                                "final": {"layer": 1, "normalized_effect": v}}}
                for step, v in ((100, 0.1), (300, 0.5), (500, 0.9))}
    history = [{"train/step": s, "validation/accuracy": a, "validation/accuracy_heuristic_wrong": w}
               for s, a, w in ((100, 0.1, 0.0), (200, 0.6, 0.2), (400, 0.995, 0.992))]
    record = TrainingRecord({}, history, 0.5, {"past_heuristic_step": 200, "systematic_step": 400}, None)
    figure = plot_over_training(per_step, "normalized_effect", record)
    top, bottom = figure.axes
    assert [line.get_label() for line in top.lines[:2]] == ["root_value", "final"]
    assert list(top.lines[1].get_ydata()) == [0.1, 0.5, 0.9]
    for ax in (top, bottom):
        vertical = sorted(line.get_xdata()[0] for line in ax.lines if len(set(line.get_xdata())) == 1
                          and list(line.get_ydata()) == [0, 1])
        assert vertical == [200, 400]


def test_routes_are_each_layers_most_attending_head_as_plain_torch_computes_it(trained, tmp_path):
    """--routes: at every checkpoint, per layer, the head whose mean attention (over the same pairs'
    original programs) from the destination role to the source role is highest -- recomputed here
    from transformers' own eager attention weights on the checkpoint, positions by character
    offset (one token per character after BOS)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bindexp.jobs.over_training import OverTrainingSettings, run_over_training
    from bindexp.tasks.binding import analyse_binding

    routes = ["final<-root_value", "chain2_end<-chain1_end"]
    settings = parse_settings(OverTrainingSettings, [f"--checkpoints={trained.checkpoint_dir}", "--steps=[10, 30]",
                                                     f"--output_dir={tmp_path}", "--wandb_mode=disabled",
                                                     f"--routes={json.dumps(routes)}", *PATCH])
    outcome = run_over_training(settings)
    table = pd.read_csv(outcome.out_dir / "routes_over_training.csv")
    assert list(table.columns) == ["step", "route", "layer", "head", "attention", "ci_low", "ci_high", "n"]
    assert len(table) == 2 * 2 * 2  # steps x routes x layers
    for step in (10, 30):
        checkpoint = trained.checkpoint_dir / f"step-{step:06d}"
        records = [json.loads(line) for line in
                   (outcome.out_dir / "checkpoint_runs" / f"step-{step:06d}" / "pairs.jsonl").read_text().splitlines()]
        texts = [r["original"] for r in records]
        assert len(texts) == 3
        model = AutoModelForCausalLM.from_pretrained(checkpoint, attn_implementation="eager").eval()
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        for route in routes:
            destination, source = route.split("<-")
            weights = []  # per program [layer, head]
            for text in texts:
                ids = tokenizer(text, return_tensors="pt").input_ids
                assert ids.shape[1] == len(text) + 1  # BOS, then one token per character
                spans = analyse_binding(text).spans
                at = {role: start + 1 for role, (start, _end) in spans.items()}
                at["final"] = len(text)
                with torch.no_grad():
                    attentions = model(ids, output_attentions=True).attentions
                weights.append(torch.stack([a[0, :, at[destination], at[source]] for a in attentions]).numpy())
            mean = np.mean(weights, axis=0)
            rows = table[(table["step"] == step) & (table["route"] == route)].sort_values("layer")
            assert list(rows["layer"]) == [0, 1]
            assert list(rows["head"]) == [int(np.argmax(mean[layer])) for layer in (0, 1)]
            np.testing.assert_allclose(rows["attention"], mean.max(axis=1), rtol=1e-5, atol=1e-6)
            assert (rows["n"] == 3).all() and (rows["ci_low"] <= rows["attention"]).all()
    best = outcome.summary["routes"]["final<-root_value"]["30"]
    last = table[(table["step"] == 30) & (table["route"] == "final<-root_value")]
    assert best["attention"] == pytest.approx(last["attention"].max())
    assert (outcome.out_dir / "routes_over_training.png").read_bytes()[:4] == b"\x89PNG"

