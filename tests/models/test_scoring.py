"""Candidate scoring and generate-and-parse against hand-computed references."""

import math

import pytest
import torch

from bindexp.models import ModelError, candidate_token_ids, score_candidates, score_generate
from bindexp.tasks import build_prompt, make_programs, parse_int

DIGITS = [str(d) for d in range(10)]


def _binding_prompts(n=8, seq_len=6):
    shots = make_programs("binding", 2, seq_len, 3, stream="shots")
    programs = make_programs("binding", n, seq_len, 3, exclude={s.text for s in shots})
    return [build_prompt(p, shots) for p in programs], [p.answer for p in programs]


def test_candidate_token_ids_are_the_next_tokens(tiny_llama):
    tok = tiny_llama.tokenizer
    ids = candidate_token_ids(tok, "a = 3\n#a: ", DIGITS)
    assert ids == [tok.convert_tokens_to_ids(d) for d in DIGITS]


def test_candidate_that_merges_with_the_prompt_is_rejected(smollm_tokenizer_like):
    # SmolLM2's tokenizer merges a space into a following letter: " True" is one token, so
    # "True" after a prompt ending in a space is not a clean next token.
    tokens = smollm_tokenizer_like.convert_ids_to_tokens(smollm_tokenizer_like("#x: True")["input_ids"])
    assert tokens[-1] == "ĠTrue"  # the space merged into the answer, as in SmolLM2
    with pytest.raises(ModelError, match="not a single next token"):
        candidate_token_ids(smollm_tokenizer_like, "#x: ", ["True", "False"])


@pytest.fixture
def smollm_tokenizer_like():
    """A real BPE tokenizer with GPT-2 style space merging, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"#": 0, "x": 1, ":": 2, " ": 3, "True": 4, "False": 5, "ĠTrue": 6, "ĠFalse": 7, "Ġ": 8}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="Ġ"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_score_candidates_matches_manual_computation(tiny_model):
    prompts, answers = _binding_prompts()
    scores = score_candidates(tiny_model, prompts, answers, DIGITS, batch_size=3)
    tok = tiny_model.tokenizer
    digit_ids = [tok.convert_tokens_to_ids(d) for d in DIGITS]
    for prompt, answer, score in zip(prompts, answers, scores):
        ids = tok(prompt)["input_ids"]
        with torch.inference_mode():
            logits = tiny_model.model(input_ids=torch.tensor([ids])).logits[0, -1]
        cand = logits[digit_ids]
        order = cand.argsort(descending=True)
        assert score.prediction == DIGITS[int(order[0])]
        assert score.correct == (score.prediction == str(answer))
        assert score.margin == pytest.approx(float(cand[order[0]] - cand[order[1]]), abs=1e-4)
        p = torch.softmax(logits.float(), -1)[digit_ids[answer]]
        assert score.p_answer == pytest.approx(float(p), rel=1e-4)


def test_batched_scores_equal_one_at_a_time(tiny_llama):
    prompts, answers = _binding_prompts(n=10)
    prompts[3] = prompts[3].split("\n\n")[-1]  # a much shorter prompt in the same batch
    together = score_candidates(tiny_llama, prompts, answers, DIGITS, batch_size=10)
    alone = [score_candidates(tiny_llama, [p], [a], DIGITS)[0] for p, a in zip(prompts, answers)]
    for a, b in zip(together, alone):
        assert a.prediction == b.prediction
        assert a.margin == pytest.approx(b.margin, abs=1e-4)
        assert a.p_answer == pytest.approx(b.p_answer, rel=1e-4, abs=1e-7)


def test_answer_outside_candidates_is_rejected(tiny_llama):
    with pytest.raises(ModelError, match="not among"):
        score_candidates(tiny_llama, ["a = 3\n#a: "], [12], DIGITS)


def test_generate_and_parse_follows_greedy_decoding(tiny_llama):
    prompts, answers = _binding_prompts(n=5, seq_len=3)
    prompts[1] = prompts[1].split("\n\n")[-1]  # left padding inside the batch
    scores = score_generate(tiny_llama, prompts, answers, int, max_new_tokens=4, batch_size=5)
    tok = tiny_llama.tokenizer
    for prompt, answer, score in zip(prompts, answers, scores):
        ids = tok(prompt)["input_ids"]
        for _ in range(4):  # greedy decoding by hand, one prompt at a time
            with torch.inference_mode():
                ids.append(int(tiny_llama.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        completion = tok.decode(ids[len(tok(prompt)["input_ids"]):], skip_special_tokens=True)
        parsed = parse_int(completion)
        assert score.prediction == ("" if parsed is None else str(parsed))
        assert score.correct == (parsed == answer)
        assert math.isnan(score.margin)
