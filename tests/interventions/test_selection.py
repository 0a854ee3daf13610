"""Choosing pairs the model answers right: the same pairs as scoring every candidate, with less work."""

from bindexp.interventions.engine.plan import pair_prompts
from bindexp.interventions.engine.selection import select_pairs
from bindexp.models.scoring import score_candidates
from bindexp.tasks.counterfactuals import make_pairs
from bindexp.vocab import DIGITS


def test_selection_keeps_the_first_pairs_that_pass_and_stops_early(tiny_llama):
    calls = []

    def draw(n):
        calls.append(n)
        return make_pairs("distractor_value", n, 5, seed=1, hops=1)  # same answer on both sides

    everything = draw(64)
    prompts = [prompt for pair in everything for prompt in pair_prompts(pair, [], "raw")]
    answers = [answer for pair in everything for answer in pair.answers]
    scores = score_candidates(tiny_llama, prompts, answers, DIGITS)
    passing = [pair for k, pair in enumerate(everything) if scores[2 * k].correct and scores[2 * k + 1].correct]
    assert len(passing) >= 2, "the tiny model must answer a few pairs for this test"
    wanted = 2
    chosen, looked_at = select_pairs(tiny_llama, draw, wanted, shots=[], template="raw", batch_size=4)
    assert [p.original.text for p in chosen] == [p.original.text for p in passing[:wanted]]
    position = everything.index(passing[wanted - 1]) + 1  # candidates up to the last pair needed
    assert position <= looked_at <= len(everything)  # stopped once enough passed, not after every draw
    assert max(calls[1:]) < 64 or position > 32
