"""Batched, prefix-reusing final logits equal plain one-prompt-at-a-time forwards."""

import pytest
import torch

from bindexp.models.forward import common_prefix_length, encode, final_logits
from bindexp.tasks import build_prompt, make_programs


def _prompts(seq_lens=(2, 5, 9), shots=2, n=3):
    prompts = []
    for seq_len in seq_lens:
        examples = make_programs("binding", shots, seq_len, 1, stream="shots")
        for program in make_programs("binding", n, seq_len, 1, exclude={e.text for e in examples}):
            prompts.append(build_prompt(program, examples[:1]) if seq_len != 9 else program.text)
    return prompts


def _plain_last_logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_common_prefix_length_leaves_one_token():
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 4, 5]]) == 2
    assert common_prefix_length([[1, 2], [3, 4]]) == 0
    assert common_prefix_length([]) == 0


@pytest.mark.parametrize("batch_size", [1, 4, 64])
@pytest.mark.parametrize("reuse_prefix", [False, True])
def test_batched_final_logits_equal_one_at_a_time(tiny_model, batch_size, reuse_prefix):
    prompts = _prompts()
    sequences = [e.ids for e in encode(tiny_model.tokenizer, prompts)]
    assert len({len(s) for s in sequences}) > 2  # different lengths share batches
    got = final_logits(tiny_model.model, tiny_model.tokenizer, sequences, batch_size=batch_size,
                       reuse_prefix=reuse_prefix)
    expected = torch.stack([_plain_last_logits(tiny_model.model, ids) for ids in sequences])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_prefix_reuse_is_used_and_exact(tiny_llama):
    examples = make_programs("binding", 3, 8, 0, stream="shots")
    programs = make_programs("binding", 6, 8, 0, exclude={e.text for e in examples})
    prompts = [build_prompt(p, examples) for p in programs]
    sequences = [e.ids for e in encode(tiny_llama.tokenizer, prompts)]
    shared = common_prefix_length(sequences)
    assert shared >= len(encode(tiny_llama.tokenizer, [build_prompt(programs[0], examples)])[0].ids) // 2
    reused = final_logits(tiny_llama.model, tiny_llama.tokenizer, sequences, reuse_prefix=True)
    recomputed = final_logits(tiny_llama.model, tiny_llama.tokenizer, sequences, reuse_prefix=False)
    torch.testing.assert_close(reused, recomputed, atol=1e-5, rtol=1e-5)
