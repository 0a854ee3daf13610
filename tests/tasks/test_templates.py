"""The minimal and step-by-step templates, and reading the final answer of a reasoned completion."""

from __future__ import annotations

import re

import pytest

from bindexp.errors import TaskError
from bindexp.jobs.evaluate import EvalSettings, run_eval
from bindexp.models.scoring import score_generate
from bindexp.tasks import build_prompt, make_programs, parse_answer, prompts, register_template
from bindexp.tasks.prompts import require_answer_next, template_spec


@pytest.mark.parametrize("completion, expected", [
    ("a = 3\nb = a\nso b is 3\nAnswer: 3", 3),
    ("x starts at 1, then 4, then 9.\nanswer = 12\n", 12),
    ("first 2, then 5, finally 7", 7),          # no marker: the last value
    ("Answer: 4\nAnswer: -6 (corrected)", -6),  # the last marked answer wins
    ("no number here", None),
])
def test_final_answer_rule(completion, expected):
    assert parse_answer(completion, int, "final") == expected


def test_final_answer_of_a_boolean_task():
    assert parse_answer("x is True at first, later False\nAnswer: false", bool, "final") is False
    assert parse_answer("True, then False, then True", bool, "final") is True


def test_first_rule_is_unchanged():
    assert parse_answer(" 7\n#b: 3", int) == 7


def test_minimal_and_step_by_step_templates_wrap_the_program():
    (program,) = make_programs("counter", 1, 5, seed=1)
    minimal = build_prompt(program, template="minimal")
    assert minimal.endswith(program.text) and minimal != program.text
    reasoned = build_prompt(program, template="step_by_step")
    assert program.text in reasoned and not reasoned.endswith(program.text)
    assert reasoned.rstrip().endswith("step by step.")
    assert template_spec("minimal").answer_next and not template_spec("step_by_step").answer_next


def test_a_registered_template_with_text_after_the_code_is_generated(monkeypatch):
    monkeypatch.setattr(prompts, "_TEMPLATES", dict(prompts._TEMPLATES))
    register_template("mine", "{code}\nThink, then say 'Answer: x'.", parse="final", max_new_tokens=32)
    assert template_spec("mine").answer_next is False
    with pytest.raises(TaskError, match="reasoning before the answer"):
        require_answer_next("mine")
    require_answer_next("raw")
    with pytest.raises(TaskError, match="parse"):
        register_template("bad", "{code}", parse="middle")


def test_step_by_step_generates_and_reads_the_final_answer(tiny_llama):
    """On a tiny model: the prediction is the final value of the model's own completion."""
    programs = make_programs("loop", 4, 3, seed=0)
    prompts_ = [build_prompt(p, template="step_by_step") for p in programs]
    scores = score_generate(tiny_llama, prompts_, [p.answer for p in programs], int, max_new_tokens=40,
                            parse="final")
    tok = tiny_llama.tokenizer
    for prompt, score in zip(prompts_, scores):
        ids = tok(prompt, return_tensors="pt")
        out = tiny_llama.model.generate(**ids, max_new_tokens=40, do_sample=False,
                                        pad_token_id=tok.pad_token_id)
        completion = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        marked = re.findall(r"(?i)answer\s*[:=]\s*(-?\d+)", completion)
        values = marked or re.findall(r"-?\d+", completion)
        assert score.prediction == (values[-1].lstrip("+") if values else "")
        assert score.prediction == "" or str(int(values[-1])) == score.prediction


def test_eval_run_with_step_by_step_generates(tiny_llama, tmp_path):
    settings = EvalSettings(model="tiny-random-llama", task="counter", seq_len=[3], num_programs=3,
                            template="step_by_step", max_new_tokens=8, wandb_mode="disabled",
                            output_dir=str(tmp_path), progress=False)
    outcome = run_eval(settings)
    assert len(outcome.results) == 3
    assert outcome.results["margin"].isna().all()  # generated, not read from one forward's logits


def test_candidates_scoring_refuses_a_reasoning_template(tmp_path):
    settings = EvalSettings(model="tiny-random-llama", template="step_by_step", scoring="candidates",
                            wandb_mode="disabled", output_dir=str(tmp_path / "out"))
    with pytest.raises(TaskError, match="scoring=generate"):
        run_eval(settings)
    assert not (tmp_path / "out").exists()


def test_patching_refuses_a_reasoning_template_before_loading(tmp_path):
    from bindexp.jobs.patch import PatchSettings, run_patch

    settings = PatchSettings(model="tiny-random-llama", template="step_by_step", wandb_mode="disabled",
                             output_dir=str(tmp_path / "out"), seq_len=6)
    with pytest.raises(TaskError, match="next token"):
        run_patch(settings)
    assert not (tmp_path / "out").exists()
