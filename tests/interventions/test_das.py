"""DAS: full interchange reproduces the counterfactual run, a planted subspace is recovered,
held-out pairs never train."""

import dataclasses
import json

import pytest
import torch

from bindexp.errors import BindexpError
from bindexp.interventions.engine.patching import Cell, patched_logits
from bindexp.interventions.engine.plan import shared_prefix_length, tokenize_pairs
from bindexp.interventions.engine.prepared import prepare_pairs
from bindexp.interventions.methods.das import DasSettings, das, fit_rotation, interchange_loss, principal_angles
from bindexp.interventions.methods.subspace import (
    check_disjoint,
    interchange,
    interchanged_logits,
    site_activations,
    site_pairs,
    split_pairs,
)
from bindexp.interventions.results.metrics import cell_metrics
from bindexp.io.tensors import write_bundle
from bindexp.models.forward import SharedPrefix
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs


@pytest.fixture
def tokenized(tiny_model):
    tokenized, dropped = tokenize_pairs(tiny_model, make_pairs("root_value", 8, 6, 7, hops=2))
    assert not dropped and len({t.pair.original.text for t in tokenized}) == 8
    return tiny_model, tokenized


@pytest.fixture
def many(tiny_model):
    """Enough pairs that the random model gives the counterfactual answer for some."""
    tokenized, dropped = tokenize_pairs(tiny_model, make_pairs("root_value", 24, 6, 7, hops=2))
    assert not dropped
    return tiny_model, tokenized


def _plain(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_full_rank_das_at_the_first_layer_is_full_interchange(many):
    lm, items = many
    pairs = site_pairs(items, None)  # every position from the first differing token
    train, heldout = pairs[:4], pairs[4:]
    d = lm.model.config.hidden_size
    result = das(lm, 0, train, heldout, ks=[d], settings=DasSettings(steps=2, batch_size=2, seed=1))

    prepared = prepare_pairs(lm, "resid_pre", items[4:])
    cells = [Cell(i, 0, tuple(range(t.first_diff, len(t.ids)))) for i, t in enumerate(items[4:])]
    resid = patched_logits(lm, "resid_pre", prepared, cells)
    resid_hits = sum(int(cell_metrics(row[None], p.tokens.answer, p.clean_logits, p.ld_cf)["iia"][0])
                     for row, p in zip(resid, prepared))
    assert resid_hits > 0  # the equality below is not 0 == 0
    assert result.heldout[0].successes == resid_hits and result.heldout[0].n == 20

    # and the interchanged logits are the counterfactual run's
    acts = site_activations(lm, 0, [p.cf_ids for p in heldout], [p.positions for p in heldout])
    with torch.no_grad():
        logits = interchanged_logits(lm, 0, heldout, acts, result.rotations[d])
    for row, p in zip(logits, heldout):
        torch.testing.assert_close(row, _plain(lm.model, p.cf_ids), atol=1e-4, rtol=0)


def test_shared_prefix_gives_the_same_interchange_and_trains(tiny_llama):
    shots = make_programs("binding", 2, 5, 2, stream="shots")
    items, _ = tokenize_pairs(tiny_llama, make_pairs("root_value", 4, 5, 2, exclude={s.text for s in shots}), shots)
    start = shared_prefix_length(items)
    prefix = SharedPrefix(tiny_llama.model, items[0].ids[:start])
    pairs = site_pairs(items, "root_value")
    basis = torch.linalg.qr(torch.randn(64, 3)).Q.T
    acts = site_activations(tiny_llama, 2, [p.cf_ids for p in pairs], [p.positions for p in pairs], prefix=prefix)
    fresh_acts = site_activations(tiny_llama, 2, [p.cf_ids for p in pairs], [p.positions for p in pairs])
    with torch.no_grad():
        reused = interchanged_logits(tiny_llama, 2, pairs, acts, basis, prefix=prefix)
        fresh = interchanged_logits(tiny_llama, 2, pairs, fresh_acts, basis)
    torch.testing.assert_close(reused, fresh, atol=1e-5, rtol=0)
    result = das(tiny_llama, 2, pairs[:3], pairs[3:], ks=[4], settings=DasSettings(steps=3, batch_size=2),
                 prefix=prefix)
    assert result.losses.shape == (1, 3) and torch.isfinite(torch.tensor(result.losses)).all()
    assert all(p.requires_grad for p in tiny_llama.model.parameters())  # the freeze is undone


def _planted(n, d, generator, basis, noise=2.0):
    """Vectors whose value (0..9) sits on a circle in the planted 2-d subspace; noise elsewhere."""
    values = torch.randint(0, 10, (n,), generator=generator)
    angles = values.float() * (2 * torch.pi / 10)
    circle = torch.stack([angles.cos(), angles.sin()], dim=1) * 3.0
    off = torch.randn(n, d, generator=generator) * noise
    off = off - (off @ basis.T) @ basis
    return circle @ basis + off, values


def _readout(h, basis):
    """A linear readout that only sees the planted subspace: the nearest value on the circle."""
    angles = torch.arange(10).float() * (2 * torch.pi / 10)
    prototypes = torch.stack([angles.cos(), angles.sin()], dim=1)
    return 4.0 * (h @ basis.T) @ prototypes.T


def test_das_recovers_a_planted_subspace():
    d, k = 16, 2
    generator = torch.Generator().manual_seed(11)
    planted = torch.linalg.qr(torch.randn(d, k, generator=generator)).Q.T  # [k, d]
    clean, clean_values = _planted(400, d, generator, planted)
    cf, cf_values = _planted(400, d, generator, planted)

    def loss_of(basis, chosen):
        patched = interchange(clean[chosen], cf[chosen], basis)
        return torch.nn.functional.cross_entropy(_readout(patched, planted), cf_values[chosen])

    settings = DasSettings(steps=100, lr=0.05, batch_size=32, seed=0)
    rotation, losses = fit_rotation(d, k, loss_of, 300, settings)
    angles = principal_angles(rotation[:k], planted)
    print("principal angles (degrees):", angles.tolist())
    assert float(angles.max()) < 10.0
    assert losses[-1] < losses[0]
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(d), atol=1e-4, rtol=0)
    heldout = range(300, 400)
    predicted = _readout(interchange(clean[heldout], cf[heldout], rotation[:k]), planted).argmax(-1)
    assert float((predicted == cf_values[heldout]).float().mean()) > 0.95
    # a random 2-d subspace does not do this
    random_basis = torch.linalg.qr(torch.randn(d, k, generator=generator)).Q.T
    assert float(principal_angles(random_basis, planted).max()) > 30.0
    again, _ = fit_rotation(d, k, loss_of, 300, settings)
    assert torch.equal(again, rotation)  # same seed, same rotation
    assert clean_values.unique().numel() == 10


def test_principal_angles_of_known_subspaces():
    e = torch.eye(4)
    assert principal_angles(e[:2], e[:2]).tolist() == pytest.approx([0.0, 0.0], abs=1e-3)
    tilted = torch.stack([e[0], (e[1] + e[2]) / 2**0.5])
    assert principal_angles(tilted, e[:2]).tolist() == pytest.approx([0.0, 45.0], abs=1e-3)
    assert principal_angles(e[2:], e[:2]).tolist() == pytest.approx([90.0, 90.0], abs=1e-3)


def test_heldout_pairs_never_train(tokenized):
    lm, items = tokenized
    pairs = site_pairs(items, "root_value")
    train, heldout = split_pairs(pairs, 3, seed=4)
    assert len(heldout) == 3 and len(train) == 5
    train_texts = {text for p in train for text in p.texts}
    assert not any(text in train_texts for p in heldout for text in p.texts)
    check_disjoint(train, heldout)
    leaky = [*train, heldout[0]]
    with pytest.raises(BindexpError, match="both the training and the held-out"):
        check_disjoint(leaky, heldout)
    with pytest.raises(BindexpError, match="both the training and the held-out"):
        das(lm, 1, leaky, heldout, ks=[2], settings=DasSettings(steps=1))
    # a held-out pair sharing only its counterfactual program with a training pair counts as a leak
    twin = dataclasses.replace(train[0], texts=("another program", train[0].texts[1]))
    with pytest.raises(BindexpError):
        check_disjoint(train, [twin])
    with pytest.raises(BindexpError, match="has no 'chain9_lhs' token"):
        site_pairs(items, "chain9_lhs")
    # splitting drops training pairs that share a program with a held-out one
    duplicate = dataclasses.replace(heldout[0])
    train2, heldout2 = split_pairs([*pairs, duplicate], 3, seed=4)
    check_disjoint(train2, heldout2)


def test_loss_is_over_the_candidate_tokens(tokenized):
    _, items = tokenized
    pairs = site_pairs(items[:2], "root_value")
    logits = torch.full((2, 200), -5.0)
    for row, p in enumerate(pairs):
        logits[row, list(p.candidates)] = 0.0
        logits[row, 150] = 50.0  # a non-candidate token on top changes nothing
    expected = torch.log(torch.tensor(float(len(pairs[0].candidates))))
    assert float(interchange_loss(logits, pairs)) == pytest.approx(float(expected), abs=1e-6)


def test_rotations_save_as_safetensors(tmp_path, tiny_llama):
    from safetensors import safe_open

    items, _ = tokenize_pairs(tiny_llama, make_pairs("root_value", 4, 5, 3))
    pairs = site_pairs(items, "root_value")
    result = das(tiny_llama, 1, pairs[:3], pairs[3:], ks=[1, 4], settings=DasSettings(steps=2, batch_size=2))
    path = write_bundle(tmp_path / "das.safetensors", *result.rotation_bundle({"model": tiny_llama.name}))
    with safe_open(str(path), "pt") as handle:
        assert sorted(handle.keys()) == ["k1", "k4"]
        torch.testing.assert_close(handle.get_tensor("k4"), result.rotations[4])
        info = json.loads(handle.metadata()["bindexp"])
    assert info["ks"] == [1, 4] and info["settings"]["steps"] == 2 and info["model"] == "tiny-random-llama"
    frame = result.to_frame()
    assert frame["k"].tolist() == [1, 4] and (frame["n_heldout"] == 1).all()
    assert [a.n for a in result.train] == [3, 3]
    with pytest.raises(BindexpError, match="every k must lie in 1..64"):
        das(tiny_llama, 1, pairs[:3], pairs[3:], ks=[65])


@pytest.mark.parametrize("layer", [1, 3])
def test_the_subspace_runs_whole_residual_iia_is_read_at_its_layer(tiny_llama, layer):
    """The run's reference (the whole residual patched at the DAS site) is the grid cell at `layer`,
    not the grid's first row: equal to patching that one cell pair by pair."""
    from bindexp.interventions.engine.plan import plan_grid
    from bindexp.jobs.subspace_site import resid_patch_hits

    plan = plan_grid(tiny_llama, make_pairs("root_value", 24, 6, 7, hops=2), prefix_until="columns")
    hits, n = resid_patch_hits(plan, "final", layer, batch_size=8)
    prepared = prepare_pairs(tiny_llama, "resid_pre", plan.tokenized)
    cells = [Cell(i, layer, (t.roles["final"],)) for i, t in enumerate(plan.tokenized)]
    rows = patched_logits(tiny_llama, "resid_pre", prepared, cells)
    expected = sum(int(cell_metrics(row[None], p.tokens.answer, p.clean_logits, p.ld_cf)["iia"][0])
                   for row, p in zip(rows, prepared))
    assert n == 24 and hits == expected
    assert expected > 0  # not 0 == 0 (what reading an unpatched row gave)
