"""Roles map to tokens through offsets, whatever BOS or merging the tokenizer does."""

import pytest

from bindexp.models.forward import encode
from bindexp.models.positions import role_positions
from bindexp.tasks import build_prompt, make_programs


@pytest.mark.parametrize("spacing", ["spaced", "compact"])
def test_roles_point_at_their_characters_with_a_bos_token(tiny_llama, spacing):
    shots = make_programs("binding", 2, 5, 0, stream="shots", spacing=spacing)
    for program in make_programs("binding", 20, 7, 0, hops=3, spacing=spacing):
        prompt = build_prompt(program, shots)
        (enc,) = encode(tiny_llama.tokenizer, [prompt])
        assert enc.offsets[0] == (0, 0)  # the BOS token covers no character
        start = len(prompt) - len(program.text)
        positions = role_positions(program, enc.offsets, start)
        for role, (a, b) in program.spans.items():
            token = tiny_llama.tokenizer.convert_ids_to_tokens(enc.ids[positions[role]])
            assert token == prompt[start + a: start + b]
        assert positions["final"] == len(enc.ids) - 1


def test_merged_tokens_still_map(smollm_like_tokenizer):
    program = make_programs("binding", 1, 4, 0, hops=2)[0]
    (enc,) = encode(smollm_like_tokenizer, [program.text])
    positions = role_positions(program, enc.offsets, 0)
    for role, (a, _) in program.spans.items():
        token_start, token_end = enc.offsets[positions[role]]
        assert token_start <= a < token_end


@pytest.fixture
def smollm_like_tokenizer():
    """GPT-2 style pre-tokenization: ' k' and '#a' style merges, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n", "Ġ", "Ċ"]
    words = ["Ġ" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789="] + ["#" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(chars + words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="Ġ"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return PreTrainedTokenizerFast(tokenizer_object=backend)
