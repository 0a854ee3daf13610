"""Logit lens on tiny models: the last layer reproduces the model's logits, earlier layers match
HF's own hidden states decoded by hand, ranks and probabilities are over the full vocabulary."""

import numpy as np
import pytest
import torch

from bindexp.interventions.engine.plan import shared_prefix_length, tokenize_pairs
from bindexp.interventions.readouts.lens import (
    LENS_METRICS,
    decode_residual,
    logit_lens,
    role_lens,
    token_rank_and_prob,
)
from bindexp.models.forward import SharedPrefix
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs


@pytest.fixture
def programs(tiny_model):
    tokenized, dropped = tokenize_pairs(tiny_model, make_pairs("root_value", 3, 6, 5, hops=2))
    assert not dropped
    return tiny_model, tokenized


def _hidden_states(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.logits[0].float(), out.hidden_states  # hidden_states[l] = input of layer l, l < n_layers


def _sorted_rank(logits, token):
    """Rank by sorting the whole vocabulary (1 = top): the first place holding the token's logit."""
    ordered = torch.sort(logits, descending=True).values
    return int((ordered == logits[token]).nonzero()[0]) + 1


def test_last_layer_equals_the_model_logits(programs):
    lm, tokenized = programs
    item = tokenized[0]
    positions = list(range(len(item.ids)))
    answer, cf = item.answer.original, item.answer.counterfactual
    lens = logit_lens(lm, item.ids, positions, answer=answer, counterfactual=cf)
    logits, _ = _hidden_states(lm.model, item.ids)
    probs = torch.softmax(logits, -1)
    np.testing.assert_allclose(lens["p_answer"][-1], probs[:, answer].numpy(), atol=1e-6)
    np.testing.assert_allclose(lens["p_counterfactual"][-1], probs[:, cf].numpy(), atol=1e-6)
    expected_rank = [int((row > row[answer]).sum()) + 1 for row in logits]
    assert lens["rank_answer"][-1].tolist() == expected_rank
    assert lens["rank_answer"].shape == (lm.n_layers + 1, len(positions))


def test_earlier_layers_decode_the_hidden_states_by_hand(programs):
    lm, tokenized = programs
    item = tokenized[1]
    final = item.roles["final"]
    lens = logit_lens(lm, item.ids, [item.roles["root_value"], final], answer=item.answer.original,
                      counterfactual=item.answer.counterfactual)
    _, hidden = _hidden_states(lm.model, item.ids)
    for layer in range(lm.n_layers):
        with torch.no_grad():
            by_hand = lm.model.lm_head(lm.model.model.norm(hidden[layer][0, final])).float()
        expected = float(torch.softmax(by_hand, -1)[item.answer.original])
        assert lens["p_answer"][layer, 1] == pytest.approx(expected, abs=1e-6)


def test_rank_and_probability_cover_the_whole_vocabulary():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 5000, generator=generator)
    logits[0, 4999] = logits[0].max() + 1.0  # the last token is on top of row 0
    logits[1, 7] = logits[1, 4321]  # a tie: the scored token gets the better place
    rank, p = token_rank_and_prob(logits, 4999)
    assert int(rank[0]) == 1
    for row in range(5):
        assert int(rank[row]) == _sorted_rank(logits[row], 4999)
        expected_p = float(torch.exp(logits[row, 4999]) / torch.exp(logits[row].double()).sum())
        assert float(p[row]) == pytest.approx(expected_p, rel=1e-5)
    rank7, _ = token_rank_and_prob(logits[1], 7)
    rank4321, _ = token_rank_and_prob(logits[1], 4321)
    assert int(rank7) == int(rank4321) == _sorted_rank(logits[1], 7)


def test_decode_residual_matches_the_lm_head(tiny_llama):
    residual = torch.randn(3, tiny_llama.model.config.hidden_size)
    with torch.no_grad():
        expected = tiny_llama.model.lm_head(tiny_llama.model.model.norm(residual))
    torch.testing.assert_close(decode_residual(tiny_llama, residual), expected, atol=1e-6, rtol=0)


def test_shared_prefix_and_role_means(tiny_llama):
    shots = make_programs("binding", 2, 5, 1, stream="shots")
    tokenized, _ = tokenize_pairs(tiny_llama, make_pairs("root_value", 3, 5, 1, exclude={s.text for s in shots}),
                                  shots)
    start = shared_prefix_length(tokenized)
    prefix = SharedPrefix(tiny_llama.model, tokenized[0].ids[:start])
    answers = [(t.answer.original, t.answer.counterfactual) for t in tokenized]
    columns = ["root_value", "query_var", "final", "not_a_role"]
    grid = role_lens(tiny_llama, [t.ids for t in tokenized], [t.roles for t in tokenized], answers, columns,
                     prefix=prefix)
    assert grid.axes == ("layer", "role") and grid.labels["layer"] == list(range(tiny_llama.n_layers + 1))
    assert set(grid.metrics) == set(LENS_METRICS)
    fresh = [logit_lens(tiny_llama, t.ids, [t.roles["final"]], answer=a, counterfactual=c)
             for t, (a, c) in zip(tokenized, answers)]
    for metric in LENS_METRICS:
        np.testing.assert_allclose(grid.mean[metric][:, 2], np.mean([f[metric][:, 0] for f in fresh], axis=0),
                                   atol=1e-5)
    assert np.isnan(grid.mean["p_answer"][:, 3]).all() and (grid.n[:, :3] == 3).all()
