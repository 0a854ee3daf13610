"""The pieces of a training step: schedule, labels, optimizer state round trip, phases."""

from random import Random

import torch

from bindexp.tasks.binding import analyse_binding
from bindexp.training.architecture import ArchSpec, new_model, program_tokenizer
from bindexp.training.data import Supervision, supervised_example
from bindexp.training.evaluation import phase_boundaries
from bindexp.training.state import load_optimizer, optimizer_tensors
from bindexp.training.step import IGNORE, OptimSpec, lr_factor, make_batch, make_optimizer, train_step


def _examples(texts):
    """Plain training examples (one query, no extra targets) of program-plus-answer texts."""
    return [supervised_example(analyse_binding(t[:-1]), Supervision(), rng=None) for t in texts]


def test_warmup_then_linear_decay_to_zero():
    assert [lr_factor(s, warmup=2, total=6) for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_factor(0, warmup=0, total=4) == 1.0


def test_decay_at_the_end_holds_the_rate_until_its_last_steps():
    assert [lr_factor(s, warmup=2, total=10, decay=4) for s in range(11)] == \
        [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_answer_loss_has_one_label_per_program_and_it_is_the_answer_digit():
    tokenizer = program_tokenizer()
    texts = ["a=3\nb=a\n#b: 3", "c = 7\n#c: 7"]  # different lengths: the shorter one is padded
    batch = make_batch(tokenizer, _examples(texts), "answer", torch.device("cpu"))
    assert batch.input_ids.shape == (2, 1 + len(texts[0]))
    for row, text in enumerate(texts):
        kept = (batch.labels[row] != IGNORE).nonzero().flatten().tolist()
        assert kept == [len(text) - 1]  # label index i is the token after input position i
        assert tokenizer.convert_ids_to_tokens(int(batch.labels[row, kept[0]])) == text[-1]
    every = make_batch(tokenizer, _examples(texts), "all", torch.device("cpu"))
    assert [int((every.labels[r] != IGNORE).sum()) for r in range(2)] == [len(t) for t in texts]


def test_supervision_labels_equal_hand_built_ones_on_a_two_program_batch():
    tokenizer = program_tokenizer()
    programs = [analyse_binding("a=1\nb=a\n#b: "), analyse_binding("c=2\nd=5\nc=d\n#c: ")]
    supervision = Supervision(queries_per_program=2, line_targets=True)
    examples = [supervised_example(p, supervision, Random(0)) for p in programs]
    # each program has one other variable, so its extra query is fixed
    assert [e.text for e in examples] == ["a=1\nb=a\n#b: 1\n#a: 1", "c=2\nd=5\nc=d\n#c: 5\n#d: 5"]
    batch = make_batch(tokenizer, examples, "answer", torch.device("cpu"))
    # label index i = the target predicted at input token i = character i - 1 (token 0 is BOS):
    # line ends predict the line's value; each query's trailing space predicts its answer
    wanted = {0: {4: "1", 8: "1", 12: "1", 18: "1"},
              1: {4: "2", 8: "5", 12: "5", 16: "5", 22: "5"}}
    expected = torch.full_like(batch.labels, IGNORE)
    for row, targets in wanted.items():
        for index, digit in targets.items():
            expected[row, index] = tokenizer.convert_tokens_to_ids(digit)
    assert torch.equal(batch.labels, expected)


def test_optimizer_state_survives_safetensors_exactly():
    tokenizer = program_tokenizer()
    spec = OptimSpec(lr=1e-2, warmup_steps=1, steps=5)
    model = new_model(ArchSpec(n_layers=1, d_model=16, n_heads=2, d_ff=32), tokenizer, seed=0)
    optimizer, scheduler = make_optimizer(model, spec)
    train_step(model, make_batch(tokenizer, _examples(["a=1\n#a: 1"]), "answer", torch.device("cpu")), optimizer,
               scheduler, spec)
    tensors, groups = optimizer_tensors(optimizer)
    fresh, _ = make_optimizer(model, spec)
    load_optimizer(fresh, tensors, groups)
    for a, b in zip(optimizer.state_dict()["state"].values(), fresh.state_dict()["state"].values()):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert fresh.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]


def test_phase_boundaries_are_the_first_evaluations_past_each_threshold():
    def row(step, accuracy, wrong):
        return {"train/step": step, "validation/accuracy": accuracy, "validation/accuracy_heuristic_wrong": wrong,
                "validation/n_heuristic_right": 60, "validation/n_heuristic_wrong": 40}

    # 68/100 lies above the 0.6 plateau but its Wilson interval [0.583, 0.763] reaches below it (noise);
    # 70/100 has [0.604, 0.781], above it (bounds from the score formula by hand)
    history = [row(100, 0.12, 0.1), row(200, 0.68, 0.3), row(300, 0.70, 0.991), row(400, 0.99, 1.0)]
    assert phase_boundaries(history, plateau=0.6) == {"heuristic_step": None, "past_heuristic_step": 300,
                                                      "systematic_step": 300}  # (no right-group accuracy: no heuristic_step)
    assert phase_boundaries(history[:2], plateau=0.6) == {"heuristic_step": None, "past_heuristic_step": None,
                                                          "systematic_step": None}
    # without the group sizes there is no interval, so no boundary is claimed
    bare = [{"train/step": 100, "validation/accuracy": 0.99, "validation/accuracy_heuristic_wrong": 0.5}]
    assert phase_boundaries(bare, plateau=0.6)["past_heuristic_step"] is None


def test_the_heuristic_phase_starts_where_its_groups_intervals_separate():
    def row(step, right, wrong):
        return {"train/step": step, "validation/accuracy_heuristic_right": right, "validation/n_heuristic_right": 60,
                "validation/accuracy_heuristic_wrong": wrong, "validation/n_heuristic_wrong": 40}

    # 15/60 vs 6/40: Wilson [0.158, 0.372] and [0.071, 0.291] overlap; 42/60 vs 12/40: [0.574, 0.801]
    # lies above [0.181, 0.454] (bounds from the score formula by hand)
    history = [row(100, 0.25, 0.15), row(200, 0.7, 0.3), row(300, 0.9, 0.9)]
    assert phase_boundaries(history, plateau=0.6)["heuristic_step"] == 200
    assert phase_boundaries(history[:1], plateau=0.6)["heuristic_step"] is None
