"""The real SmolLM2-135M-Instruct (bundled GGUF): loading, tokenizer facts, scoring. Slow."""

import pytest
import torch

from bindexp.models import ModelError, candidate_token_ids, load_model, score_candidates, score_generate
from bindexp.models.forward import encode
from bindexp.tasks import build_prompt, make_programs, render_chat

pytestmark = pytest.mark.slow
DIGITS = tuple(str(d) for d in range(10))


def test_bundled_model_loads_with_its_revision(smollm):
    info = smollm.describe()
    assert info["family"] == "llama" and smollm.n_layers == 30
    assert 130e6 < info["n_params"] < 140e6
    assert info["revision"].startswith("gguf-sha256:")
    again = load_model("smollm2-135m", device="cpu")  # from the safetensors cache
    ids = torch.tensor([smollm.tokenizer("a = 3\n#a: ")["input_ids"]])
    with torch.inference_mode():
        torch.testing.assert_close(again.model(input_ids=ids).logits, smollm.model(input_ids=ids).logits)


def test_digits_are_next_tokens_but_words_merge_with_the_space(smollm):
    ids = candidate_token_ids(smollm.tokenizer, "a = 3\n#a: ", DIGITS)
    assert len(set(ids)) == 10
    with pytest.raises(ModelError, match="single next token"):
        candidate_token_ids(smollm.tokenizer, "a = True\n#a: ", ("True", "False"))


def test_few_shot_binding_is_well_above_chance(smollm):
    shots = make_programs("binding", 3, 3, 0, stream="shots")
    programs = make_programs("binding", 40, 3, 0, exclude={s.text for s in shots})
    prompts = [build_prompt(p, shots) for p in programs]
    scores = score_candidates(smollm, prompts, [p.answer for p in programs], DIGITS)
    assert sum(s.correct for s in scores) >= 14  # chance is 4 of 40; measured 24


def test_batched_equals_one_at_a_time_on_the_real_model(smollm):
    shots = make_programs("binding", 2, 6, 1, stream="shots")
    programs = make_programs("binding", 6, 6, 1, exclude={s.text for s in shots})
    prompts = [build_prompt(p, shots if i % 2 else shots[:1]) for i, p in enumerate(programs)]
    answers = [p.answer for p in programs]
    together = score_candidates(smollm, prompts, answers, DIGITS, batch_size=6)
    for prompt, answer, score in zip(prompts, answers, together):
        alone = score_candidates(smollm, [prompt], [answer], DIGITS)[0]
        assert alone.prediction == score.prediction
        assert alone.p_answer == pytest.approx(score.p_answer, rel=1e-3, abs=1e-6)


def test_offsets_map_roles_to_tokens(smollm):
    program = make_programs("binding", 1, 5, 2, hops=2)[0]
    (enc,) = encode(smollm.tokenizer, [program.text])
    start, _ = program.spans["root_value"]
    (token,) = [i for i, (a, b) in enumerate(enc.offsets) if a <= start < b]
    assert smollm.tokenizer.decode([enc.ids[token]]) == program.span_text("root_value")


def test_chat_prompt_generates_and_parses(smollm):
    programs = make_programs("binding", 3, 3, 0)
    prompts = [render_chat(smollm.tokenizer, build_prompt(p, template="instruction")) for p in programs]
    assert all("<|im_start|>assistant" in p for p in prompts)
    scores = score_generate(smollm, prompts, [p.answer for p in programs], int, max_new_tokens=6)
    assert len(scores) == 3 and all(s.prediction == "" or s.prediction.lstrip("-").isdigit() for s in scores)
