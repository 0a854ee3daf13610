"""scripts/train.py end to end on tiny configs: it learns, it resumes bit-identically, its
checkpoints load through load_model and scripts/eval.py, and bad settings fail in one line."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bindexp.io.locks import LOCK_FILE
from bindexp.jobs.train import TrainSettings, run_train
from bindexp.models import load_model
from bindexp.runs.settings import parse_settings
from bindexp.tasks import make_programs

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--n_layers=2", "--d_model=32", "--n_heads=2", "--d_ff=64", "--seq_len=3", "--hops=[1, 2]",
        "--spacing=compact", "--n_eval=16", "--batch_size=8", "--progress=False", "--wandb_mode=disabled"]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _settings(*args):
    return parse_settings(TrainSettings, [*TINY, *args])


@pytest.fixture(autouse=True)
def one_thread():
    """Bit-identical comparisons need the same thread count in both runs; one thread is also the
    fastest on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CONV_RECIPE = ["--model=llama", "--conv_kernel=3", "--queries_per_program=2", "--line_targets=True", "--relabel=True",
               "--decay_steps=4"]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "conv"])
def test_a_killed_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, arch):
    model = CONV_RECIPE if arch == "conv" else [f"--model={arch}"]
    common = [*model, "--dropout=0.1", "--steps=12", "--warmup_steps=3", "--eval_every=4",
              "--checkpoint_every=4", f"--output_dir={tmp_path / 'out'}"]
    whole = run_train(_settings(*common, f"--checkpoint_dir={tmp_path / 'whole'}"))
    killed = run_train(_settings(*common, f"--checkpoint_dir={tmp_path / 'split'}", "--stop_after=10"))
    assert killed.summary["completed"] is False and killed.summary["steps_done"] == 10
    assert killed.checkpoint.name == "step-000008"  # steps 9 and 10 are lost, as in a real kill
    resumed = run_train(_settings(*common, f"--checkpoint_dir={tmp_path / 'split'}", "--resume=True"))
    assert resumed.summary["completed"] is True and resumed.checkpoint.name == "step-000012"

    a = load_file(str(whole.checkpoint / "model.safetensors"))
    b = load_file(str(resumed.checkpoint / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(str(tmp_path / "whole" / "step-000008" / "model.safetensors"))
    assert not all(torch.equal(a[k], start[k]) for k in a)  # steps 9-12 did change the weights
    opt_a = load_file(str(whole.checkpoint / "trainer" / "optimizer.safetensors"))
    opt_b = load_file(str(resumed.checkpoint / "trainer" / "optimizer.safetensors"))
    assert all(torch.equal(opt_a[k], opt_b[k]) for k in opt_a)
    assert [r["validation/accuracy"] for r in whole.history] == [r["validation/accuracy"] for r in resumed.history]
    # the resumed run's history file holds the whole run, each row once, as the uninterrupted run's does
    rows = [[json.loads(line) for line in (outcome.out_dir / "history.jsonl").read_text().splitlines()]
            for outcome in (whole, resumed)]
    assert [r["train/step"] for r in rows[1]] == [r["train/step"] for r in rows[0]]
    assert [r.get("validation/accuracy") for r in rows[1]] == [r.get("validation/accuracy") for r in rows[0]]


def test_resuming_with_other_training_settings_is_refused(tmp_path):
    common = ["--steps=4", "--warmup_steps=1", "--checkpoint_every=2", f"--checkpoint_dir={tmp_path / 'c'}",
              f"--output_dir={tmp_path / 'out'}"]
    run_train(_settings(*common, "--stop_after=3"))
    code = _script("train").main([*TINY, *common, "--resume=True", "--lr=0.5"])
    assert code == 2


def test_checkpoints_hold_no_pickle_and_keep_latest_and_best(tmp_path):
    outcome = run_train(_settings("--steps=6", "--warmup_steps=1", "--checkpoint_every=2", "--keep_checkpoints=1",
                                  f"--checkpoint_dir={tmp_path / 'c'}", f"--output_dir={tmp_path / 'out'}"))
    index = json.loads((tmp_path / "c" / "checkpoints.json").read_text())
    assert index["latest"] == "step-000006"
    kept = sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_dir())
    assert kept == sorted({index["latest"], index["best"]})
    files = [p for p in (tmp_path / "c").rglob("*") if p.is_file() and p.name != LOCK_FILE]
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".jinja"}
    assert outcome.summary["checkpoint"] == str(tmp_path / "c" / "step-000006")


def test_a_checkpoint_loads_and_scripts_eval_scores_it(tmp_path):
    outcome = run_train(_settings("--steps=4", "--warmup_steps=1", f"--checkpoint_dir={tmp_path / 'c'}",
                                  f"--output_dir={tmp_path / 'out'}"))
    lm = load_model(str(outcome.checkpoint), device="cpu")
    assert lm.family == "llama" and lm.n_layers == 2
    program = make_programs("binding", 1, 3, seed=5, hops=1, spacing="compact")[0]
    ids = lm.tokenizer(program.text)["input_ids"]
    assert ids[0] == lm.tokenizer.bos_token_id and len(ids) == len(program.text) + 1  # one token per character

    out = tmp_path / "eval-out"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "eval.py"), f"--model={outcome.checkpoint}", "--wandb_mode=disabled",
         "--seq_len=3", "--hops=[1, 2]", "--spacing=compact", "--num_programs=10", "--progress=False",
         f"--output_dir={out}", "--run_name=eval-trained", "--device=cpu"],
        capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    summary = json.loads((out / "eval-trained" / "summary.json").read_text())
    assert summary["n_programs"] == 20 and 0.0 <= summary["accuracy"] <= 1.0


@pytest.mark.parametrize("args, message", [
    (["--preset=huge"], "preset"),
    (["--resume=True"], "checkpoint_dir"),
    (["--d_model=30", "--n_heads=4"], "divisible"),
    (["--hops=[5]"], "hops"),
    (["--seq_len=2", "--hops=[3]"], "cannot exceed seq_len"),
])
def test_bad_settings_fail_in_one_line_before_any_run(tmp_path, capsys, args, message):
    code = _script("train").main([*TINY, f"--output_dir={tmp_path / 'out'}", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_presets_fill_only_what_is_not_given():
    paper = parse_settings(TrainSettings, ["--preset=paper"])
    assert (paper.n_layers, paper.n_heads, paper.d_model, paper.seq_len, paper.batch_size) == (12, 8, 512, 16, 64)
    assert paper.d_model // paper.n_heads == 64 and paper.steps == 105_400
    cpu = parse_settings(TrainSettings, ["--preset=cpu", "--steps=7", "--d_model=64"])
    assert (cpu.steps, cpu.d_model, cpu.n_layers, cpu.seq_len, cpu.spacing) == (7, 64, 4, 8, "compact")


def test_the_paper_preset_has_the_paper_parameter_count():
    from bindexp.training.architecture import ArchSpec, n_parameters, new_model, program_tokenizer

    s = parse_settings(TrainSettings, ["--preset=paper"])
    model = new_model(ArchSpec(s.model, s.n_layers, s.n_heads, s.d_model, s.d_ff, s.activation), program_tokenizer(), 0)
    assert abs(n_parameters(model) - 37.8e6) < 0.2e6


def test_bench_train_runs_on_a_tiny_config(capsys):
    code = _script("bench_train").main([*TINY, "--steps=2", "--warmup=1", "--device=cpu"])
    assert code == 0
    assert "ratio" in capsys.readouterr().out


def test_a_few_hundred_steps_learn_a_trivial_task(tmp_path, monkeypatch, capsys):
    # 2-line programs whose 2-hop chain (`a=3`, `b=a`, `#b: `) has its constant on line 1: chance is
    # 0.1. (The 1-hop 2-line task needs a variable-matching circuit: measured, a 2-layer d 64 model
    # sits at its 0.5 plateau until ~750 steps and passes 0.9 at ~1,250 (71 s, docs/RESULTS.md), too
    # slow for the fast suite.)
    monkeypatch.chdir(tmp_path)
    code = _script("train").main([
        "--seq_len=2", "--hops=[2]", "--spacing=compact", "--n_layers=2", "--d_model=32", "--n_heads=2",
        "--d_ff=64", "--batch_size=32", "--steps=200", "--lr=3e-3", "--warmup_steps=20", "--eval_every=50",
        "--checkpoint_every=100", "--n_eval=100", "--progress=False", "--run_name=learn", "--wandb_mode=offline",
        f"--checkpoint_dir={tmp_path / 'ckpt'}",
    ])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "W&B call failed" not in captured.err  # history, summary and model artifacts all logged
    (files,) = [Path(line.split("results: ")[1].strip()) for line in printed.splitlines() if line.startswith("results: ")]
    summary = json.loads((files / "summary.json").read_text())
    history = [json.loads(line) for line in (files / "history.jsonl").read_text().splitlines()]
    evals = [row for row in history if "validation/accuracy" in row]
    assert [row["train/step"] for row in evals] == [50, 100, 150, 200]
    assert summary["validation/accuracy"] > 0.9 and summary["test/accuracy"] > 0.9
    assert evals[0]["validation/loss"] > evals[-1]["validation/loss"]
    assert summary["heuristic_plateau"] == 1.0  # every 2-line answer is a line-1 or line-2 constant
    assert summary["systematic_step"] is None and summary["completed"] is True
    assert summary["checkpoint"].endswith("step-000200") and "wandb sync" in printed
    # the final test accuracy with its n and a 95% Wilson interval (score interval, by hand)
    n, p = summary["test/accuracy_n"], summary["test/accuracy"]
    assert n == 100 and sum(summary[f"test/accuracy_hops{h}_n"] for h in [2]) == 100
    z = 1.959963984540054
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    assert summary["test/accuracy_ci_low"] == pytest.approx(min(p, centre - half), abs=1e-9)
    assert summary["test/accuracy_ci_high"] == pytest.approx(max(p, min(1.0, centre + half)), abs=1e-9)
    assert (files / "training.png").stat().st_size > 10_000


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path):
    import os
    import signal
    import time

    common = ["--steps=60", "--warmup_steps=5", "--eval_every=100", "--checkpoint_every=2", "--n_eval=4",
              "--dropout=0.1", "--threads=1", f"--output_dir={tmp_path / 'out'}"]
    killed_dir = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *TINY, *common, f"--checkpoint_dir={killed_dir}"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    index = killed_dir / "checkpoints.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if index.exists() and json.loads(index.read_text())["latest"] >= "step-000004":
            break
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    latest = json.loads(index.read_text())["latest"]
    if latest == "step-000060":
        pytest.skip("the run finished before it could be killed")
    assert child.returncode == -signal.SIGKILL

    resumed = run_train(_settings(*common, f"--checkpoint_dir={killed_dir}", "--resume=True"))
    whole = run_train(_settings(*common, f"--checkpoint_dir={tmp_path / 'whole'}"))
    a = load_file(str(whole.checkpoint / "model.safetensors"))
    b = load_file(str(resumed.checkpoint / "model.safetensors"))
    assert resumed.checkpoint.name == "step-000060" and all(torch.equal(a[k], b[k]) for k in a)


def test_a_conv_checkpoint_runs_through_every_analysis(tmp_path, monkeypatch):
    """A trained conv model is an ordinary local model folder: eval, patch (conv_out included),
    attention, lens, locate and subspace take it as they are."""
    monkeypatch.chdir(tmp_path)
    trained = run_train(_settings(*CONV_RECIPE, "--steps=4", "--warmup_steps=1", "--checkpoint_every=4",
                                  "--seq_len=4", f"--output_dir={tmp_path / 'out'}"))
    lm = load_model(str(trained.checkpoint), device="cpu")
    assert lm.family == "bindexp_conv_llama" and "conv_out" in lm.sites.available
    model = f"--model={trained.checkpoint}"
    common = [model, "--seq_len=4", "--hops=2", "--shots=0", "--only_correct=False", "--systematic_only=False",
              "--progress=False", "--min_gap=0", "--wandb_mode=disabled", "--num_programs=2"]
    assert _script("eval").main([model, "--seq_len=4", "--hops=[1, 2]", "--num_programs=4", "--shots=0",
                                 "--wandb_mode=disabled", "--progress=False"]) == 0
    for site in ("conv_out", "head"):
        assert _script("patch").main([*common, f"--site={site}"]) == 0
    assert _script("attention").main([*common, "--top_k=1"]) == 0
    assert _script("lens").main(common) == 0
    assert _script("locate").main([*common, "--counterfactuals=[root_value]"]) == 0
    subspace = [c for c in common if not c.startswith("--num_programs")]
    assert _script("subspace").main([*subspace, "--role=root_value", "--layer=1", "--ks=[2]", "--n_train=4",
                                     "--n_heldout=2", "--steps=2", "--probe_steps=2"]) == 0


def test_init_from_starts_from_a_checkpoints_weights_and_refuses_another_architecture(tmp_path, capsys):
    from bindexp.io.checkpoints import load_weights
    from bindexp.jobs.train import arch_spec
    from bindexp.training.architecture import new_model, program_tokenizer

    first = run_train(_settings(*CONV_RECIPE, "--steps=4", "--warmup_steps=1", f"--output_dir={tmp_path / 'a'}"))
    settings = _settings(*CONV_RECIPE, "--queries_per_program=1", "--line_targets=False", f"--init_from={first.checkpoint}")
    model = new_model(arch_spec(settings), program_tokenizer(), seed=99)
    load_weights(model, first.checkpoint)
    trained = load_file(str(first.checkpoint / "model.safetensors"))
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())
    tuned = run_train(parse_settings(TrainSettings, [*TINY, *CONV_RECIPE, "--queries_per_program=1",
                                                     "--line_targets=False", f"--init_from={first.checkpoint}",
                                                     "--steps=2", f"--output_dir={tmp_path / 'b'}"]))
    assert tuned.summary["completed"]
    # another width: refused in one line before anything runs
    code = _script("train").main([*TINY, *CONV_RECIPE, "--d_model=16", f"--init_from={first.checkpoint}",
                                  f"--output_dir={tmp_path / 'c'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "hidden_size=32 there but 16" in err
    assert not (tmp_path / "c").exists()


def test_stop_when_systematic_stops_and_saves_at_the_first_evaluation_past_the_threshold(tmp_path):
    """The stop rule reads one number of each evaluation row (validation heuristic-wrong accuracy);
    the real training loop runs and saves, and the evaluations are scripted so the threshold is met
    at a known step without training a tiny model to 0.99. 0.99 itself does not stop (strictly
    above), 0.995 at step 6 does: training ends there, with a checkpoint at 6 although
    checkpoint_every is 4, and the history ends at that evaluation."""
    from bindexp.io.checkpoints import latest_checkpoint
    from bindexp.jobs.train import arch_spec, data_spec, optim_spec
    from bindexp.training.data import ProgramData
    from bindexp.training.trainer import FitPlan, Trainer

    scripted = {2: 0.5, 4: 0.99, 6: 0.995, 8: 1.0}

    class ScriptedEvaluations(Trainer):
        def evaluate(self, names=None, intervals=False):
            return {"validation/accuracy": scripted[self.step], "validation/loss": 1.0,
                    "validation/accuracy_heuristic_wrong": scripted[self.step]}

    def new_trainer():
        settings = _settings("--steps=10")
        return ScriptedEvaluations(ProgramData(data_spec(settings)), arch_spec(settings), optim_spec(settings),
                                   seed=0, device=torch.device("cpu"), amp_dtype=torch.float32, loss_on="answer",
                                   batch_size=4, eval_batch_size=8)

    def run_fit(trainer, root, stop):
        plan = FitPlan(log_every=2, eval_every=2, checkpoint_every=4, checkpoint_root=root, keep_checkpoints=10,
                       stop_when_systematic=stop)
        return trainer.fit(8, plan, on_row=lambda row: None, on_checkpoint=lambda path, best: None,
                           state=lambda: {"settings": {}, "history": trainer.history, "losses": trainer.losses})

    def fit(stop):
        trainer, root = new_trainer(), tmp_path / f"stop-{stop}"
        return trainer, root, run_fit(trainer, root, stop)

    trainer, root, stopped = fit(True)
    assert trainer.step == 6 and stopped is False  # stopped early but saved: not a stop_after stop
    assert [row["train/step"] for row in trainer.history] == [2, 4, 6]
    assert latest_checkpoint(root).name == "step-000006"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-000004", "step-000006"]
    again = new_trainer()
    again.resume(latest_checkpoint(root))  # resuming the stopped run finishes it; it does not train on
    assert run_fit(again, root, True) is False
    assert again.step == 6 and latest_checkpoint(root).name == "step-000006"
    trainer, root, _ = fit(False)  # the same evaluations without the rule: all 8 steps
    assert trainer.step == 8 and latest_checkpoint(root).name == "step-000008"
