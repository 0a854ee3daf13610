"""`--positions=all`: a column is the same token of the program in every pair (issue 9 item 10).

The tiny models' tokenizer has one token per character, so every program has the same token
length; real tokenizers merge a space into a following letter (` y`) but not into a digit
(` `, `9`), so copies are shorter than constants. The tokenizer here does the same.
"""

import string

import numpy as np
import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from bindexp.errors import ModelError
from bindexp.interventions.engine.plan import plan_grid
from bindexp.interventions.methods.exact import patch_grid
from bindexp.models.loading import LoadedModel
from bindexp.models.tiny import ALPHABET, SPECIAL_TOKENS, tiny_config
from bindexp.tasks.counterfactuals import make_pairs


@pytest.fixture(scope="module")
def merging_lm():
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + list(ALPHABET) + [" " + c for c in string.ascii_lowercase])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r" [a-z]|[\s\S]"), behavior="isolated")
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                        eos_token="<eos>", unk_token="<unk>")
    model = AutoModelForCausalLM.from_config(tiny_config("llama", len(vocab))).eval()
    return LoadedModel("merging-llama", model, tokenizer, "test", "llama")


def _ends(lm, text):
    """Each token's last character in `text` (the test's own reading of the tokenizer)."""
    offsets = lm.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    return [end - 1 for start, end in offsets if end > start]


def test_every_column_is_the_same_character_of_the_program_in_every_pair(merging_lm):
    pairs = make_pairs("root_value", 8, 6, 0, hops=2)
    lengths = {len(_ends(merging_lm, p.original.text)) for p in pairs}
    assert len(lengths) > 1, "the pairs must differ in token length for this test to mean anything"
    plan = plan_grid(merging_lm, pairs, columns="positions", layers=[0])
    where: dict = {}
    for t in plan.tokenized:
        ends = _ends(merging_lm, t.pair.original.text)
        first = len(t.ids) - len(ends)  # tokens of the program start after the BOS token
        for label, position in plan.column_map(t).items():
            if position == len(t.ids) - 1:
                where.setdefault(label, set()).add("last token")
            else:
                where.setdefault(label, set()).add(ends[position - first])
    assert all(len(found) == 1 for found in where.values()), {k: v for k, v in where.items() if len(v) > 1}
    # every line's right-hand side (a constant's digit or a copy's ` y`) has one column in every pair
    rhs = [label for label, found in where.items() if found != {"last token"} and (next(iter(found)) + 2) % 6 == 0]
    assert rhs and all(label in plan.column_map(t) for t in plan.tokenized for label in rhs)
    grid = patch_grid(merging_lm, pairs, columns="positions", layers=[0, 3])
    assert grid.labels["position"] == plan.labels and np.isfinite(grid.mean["logit_diff"][:, -1]).all()


def test_programs_of_different_shapes_are_refused(merging_lm):
    pairs = make_pairs("root_value", 2, 5, 0, hops=2) + make_pairs("root_value", 2, 6, 0, hops=2)
    with pytest.raises(ModelError, match="one shape"):
        plan_grid(merging_lm, pairs, columns="positions", layers=[0])
    plan_grid(merging_lm, pairs, columns="roles", layers=[0])  # roles align any shapes
