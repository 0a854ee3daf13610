"""Robust programs: exactly those every listed model answers correctly in its own eval run."""

import importlib.util
import json
from pathlib import Path

import pytest

from bindexp.io.programs import read_robust
from bindexp.jobs.evaluate import EvalSettings, run_eval
from bindexp.jobs.robust import RobustSettings, find_robust
from bindexp.runs.conditions import eval_conditions
from bindexp.runs.pairs import load_robust_programs
from bindexp.runs.settings import parse_settings

ROOT = Path(__file__).resolve().parents[2]
N_PROGRAMS = 40  # random tiny models answer ~1 in 10: enough programs that each gets some right
COMMON = dict(hops=[1, 2], seq_len=[5], num_programs=N_PROGRAMS, shots=0, seed=0, progress=False,
              wandb_mode="disabled")


@pytest.fixture(scope="module")
def other_llama(tmp_path_factory):
    """A second tiny Llama (other random weights) as a local model directory."""
    from bindexp.models import load_model

    lm = load_model("tiny-random-llama", device="cpu", seed=1)
    folder = tmp_path_factory.mktemp("tiny-llama-seed1")
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def evals(other_llama, tmp_path_factory):
    """Each model's ordinary eval run: {model: (set of (hops, seq_len, index) answered correctly, results)}."""
    out = tmp_path_factory.mktemp("evals")
    by_model = {}
    for model in ("tiny-random-llama", "tiny-random-qwen3", other_llama):
        results = run_eval(EvalSettings(model=model, output_dir=str(out), **COMMON)).results
        by_model[model] = ({(r.hops, r.seq_len, r.index) for r in results.itertuples() if r.correct}, results)
    return by_model


@pytest.fixture(scope="module")
def robust_pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust")
    settings = RobustSettings(models=["tiny-random-llama", "tiny-random-qwen3"], out=str(out / "robust.jsonl"),
                              output_dir=str(out), **COMMON)
    return settings, find_robust(settings)


def _check(lines, models, evals):
    expected = set.intersection(*(evals[m][0] for m in models))
    assert {(line["hops"], line["seq_len"], line["index"]) for line in lines} == expected
    texts = {(r.hops, r.seq_len, r.index): (r.program, r.answer) for r in evals[models[0]][1].itertuples()}
    for line in lines:
        assert (line["program"], line["answer_text"]) == texts[(line["hops"], line["seq_len"], line["index"])]
        assert line["models"] == models and set(line["margins"]) == set(models) and line["seed"] == 0
    return expected


def test_robust_programs_are_those_both_models_answer(robust_pair, evals):
    settings, outcome = robust_pair
    lines = read_robust(settings.out)
    expected = _check(lines, settings.models, evals)
    assert expected, "neither tiny model answers any program: the check would be empty"
    meta = json.loads(Path(settings.out).with_name("robust.meta.json").read_text())
    assert [c["robust"] for c in meta["conditions"]] == [sum(1 for k in expected if k[0] == h) for h in (1, 2)]
    for model in settings.models:
        assert [c[f"correct[{model}]"] for c in outcome.counts] == [
            sum(1 for k in evals[model][0] if k[0] == h) for h in (1, 2)]
    assert [c["candidates"] for c in outcome.counts] == [N_PROGRAMS, N_PROGRAMS]


def test_a_program_one_model_gets_wrong_is_not_robust(other_llama, evals, tmp_path):
    models = ["tiny-random-llama", other_llama]
    first, second = (evals[m][0] for m in models)
    assert first and second and first != second, "the two models must differ for this check to mean anything"
    settings = RobustSettings(models=models, out=str(tmp_path / "r.jsonl"), output_dir=str(tmp_path), **COMMON)
    find_robust(settings)
    _check(read_robust(tmp_path / "r.jsonl"), models, evals)


def test_robust_file_loads_back_as_the_same_programs(robust_pair):
    settings, _ = robust_pair
    lines = read_robust(settings.out)
    conditions = {(c.hops, c.seq_len): c for c in eval_conditions(settings)}
    programs = load_robust_programs(settings.out)
    assert len(programs) == len(lines) > 0
    for line, program in zip(lines, programs):
        assert program == conditions[(line["hops"], line["seq_len"])].programs[line["index"]]
    only_two = load_robust_programs(settings.out, hops=2, seq_len=5)
    assert only_two == [p for p, line in zip(programs, lines) if line["hops"] == 2]


def test_find_robust_script_and_its_settings(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("find_robust", ROOT / "scripts" / "find_robust.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "r.jsonl"
    assert module.main(["--models=tiny-random-llama", "--hops=1", "--seq_len=4", "--num_programs=10",
                        "--progress=False", "--wandb_mode=disabled", f"--output_dir={tmp_path}", f"--out={out}"]) == 0
    assert "robust programs written to" in capsys.readouterr().out and out.exists()
    assert module.main(["--model=tiny-random-llama", "--models=[tiny-random-llama]"]) == 2
    assert module.main(["--models=[not-a-model]", "--wandb_mode=disabled"]) == 2
    assert "--models" in capsys.readouterr().err
    parsed = parse_settings(RobustSettings, ["--models=[tiny-random-llama, Qwen/Qwen3-0.6B]", "--hops=[1, 3]"])
    assert parsed.models == ["tiny-random-llama", "Qwen/Qwen3-0.6B"] and parsed.hops == [1, 3]
