"""Subspace controls and boundless DAS on planted toys, where the answer is known: the value lives
in a planted k-dim subspace of a d-dim "residual", a linear readout sees only that subspace."""

import pytest
import torch

from bindexp.interventions.methods.boundless import BoundlessSettings, boundary_mask, fit_boundless, temperatures
from bindexp.interventions.methods.controls import (
    control_bases,
    difference_pca,
    random_subspace,
    random_summary,
    score_bases,
    subspace_shares,
)
from bindexp.interventions.methods.das import principal_angles
from bindexp.interventions.methods.subspace import Accuracy, interchange
from bindexp.stats import wilson_interval

D = 16


def _planted_basis(k, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(D, k, generator=generator)).Q.T  # [k, D]


def _toy_pairs(n, planted, seed, classes=10):
    """clean x: noise off the subspace plus a class prototype in it; the counterfactual is the same
    x with another class's prototype (the only difference lies in the planted subspace), plus a
    little noise everywhere."""
    generator = torch.Generator().manual_seed(seed)
    k = planted.shape[0]
    prototypes = torch.randn(classes, k, generator=torch.Generator().manual_seed(99)) * 3.0
    values = torch.randint(0, classes, (n,), generator=generator)
    cf_values = (values + torch.randint(1, classes, (n,), generator=generator)) % classes
    off = torch.randn(n, D, generator=generator) * 2.0
    off = off - (off @ planted.T) @ planted
    clean = off + prototypes[values] @ planted
    cf = off + prototypes[cf_values] @ planted + torch.randn(n, D, generator=generator) * 0.05
    return clean, cf, cf_values, prototypes


def _readout(h, planted, prototypes):
    """Logits: minus the squared distance to each class prototype, inside the planted subspace."""
    coordinates = h @ planted.T
    return -((coordinates[:, None, :] - prototypes[None]) ** 2).sum(-1)


def _scorer(clean, cf, cf_values, planted, prototypes):
    def score(basis):
        predicted = _readout(interchange(clean, cf, basis), planted, prototypes).argmax(-1)
        hits = int((predicted == cf_values).sum())
        return Accuracy(hits, len(cf_values), *wilson_interval(hits, len(cf_values)))
    return score


def test_difference_pca_recovers_the_planted_subspace_and_random_subspaces_score_at_chance():
    planted = _planted_basis(2, seed=3)
    train_clean, train_cf, _, prototypes = _toy_pairs(200, planted, seed=1)
    clean, cf, cf_values, _ = _toy_pairs(100, planted, seed=2)
    found = difference_pca(train_clean, train_cf, 2)
    assert float(principal_angles(found, planted).max()) < 3.0  # the differences lie in the planted plane
    torch.testing.assert_close(found @ found.T, torch.eye(2), atol=1e-5, rtol=0)
    rows = score_bases(control_bases(train_clean, train_cf, [2], seeds=range(5)),
                       _scorer(clean, cf, cf_values, planted, prototypes), clean, cf)
    diff = next(r for r in rows if r["method"] == "diff_pca")
    assert diff["iia"] > 0.95 and diff["difference_share"] > 0.99 and diff["n_heldout"] == 100
    chance = random_summary(rows)[2]
    assert chance["seeds"] == 5 and chance["iia_mean"] < 0.3  # 10 classes: chance is about 0.1
    assert chance["iia_min"] <= chance["iia_mean"] <= chance["iia_max"]
    # the whole space interchanges everything, whatever it is
    whole = score_bases(control_bases(train_clean, train_cf, [D], seeds=[0]), _scorer(clean, cf, cf_values, planted,
                                                                                     prototypes), clean, cf)
    assert all(r["iia"] == 1.0 and r["variance_share"] == pytest.approx(1.0) for r in whole)


def test_random_subspaces_are_orthonormal_seeded_and_differ_by_seed():
    a, again, b = random_subspace(D, 4, 0), random_subspace(D, 4, 0), random_subspace(D, 4, 1)
    assert torch.equal(a, again) and not torch.allclose(a, b)
    torch.testing.assert_close(a @ a.T, torch.eye(4), atol=1e-5, rtol=0)


def test_shares_by_hand():
    e = torch.eye(3)
    clean = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    cf = torch.tensor([[0.0, 1.0, 0.0], [2.0, 1.0, 0.0]])  # differences (0, 1, 0) both
    shares = subspace_shares(e[1:2], clean, cf)
    assert shares["difference_share"] == pytest.approx(1.0)
    # rows x: (0,0,0), (2,0,0), (0,1,0), (2,1,0): variance 4 * 1 along e0 (deviations +-1), 4 * 0.25 along e1
    assert shares["variance_share"] == pytest.approx(1.0 / 5.0)
    assert subspace_shares(e[:1], clean, cf) == {"variance_share": pytest.approx(4.0 / 5.0), "difference_share": 0.0}


def test_the_mask_and_the_schedule():
    mask = boundary_mask(10, torch.tensor(0.3), temperature=0.01)
    assert mask.round().tolist() == [1.0] * 3 + [0.0] * 7
    schedule = temperatures(BoundlessSettings(steps=5, temperature_start=8.0, temperature_end=0.5))
    assert schedule[0] == pytest.approx(8.0) and schedule[-1] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(schedule, schedule[1:]))


def _code_pairs(n, planted, seed):
    """The causal variable: k signs, z = +-1 per planted direction (2^k classes, the binary code);
    the counterfactual has other signs. Off the subspace: noise, the same on both sides."""
    generator = torch.Generator().manual_seed(seed)
    k = planted.shape[0]
    signs = torch.randint(0, 2, (n, k), generator=generator).float() * 2 - 1
    cf_signs = torch.randint(0, 2, (n, k), generator=generator).float() * 2 - 1
    off = torch.randn(n, D, generator=generator) * 2.0
    off = off - (off @ planted.T) @ planted
    codes = torch.tensor([[1.0 if (c >> j) & 1 else -1.0 for j in range(k)] for c in range(2**k)])
    labels = ((cf_signs > 0).long() * (2 ** torch.arange(k))).sum(-1)
    return off + signs @ planted, off + cf_signs @ planted, labels, codes


@pytest.mark.parametrize("k", [2, 5])
def test_boundless_das_recovers_a_planted_size(k):
    """Every one of the k directions matters (a missed one leaves half the codes wrong) and no other
    direction does (the price of the boundary takes the rest away): the size must settle on k."""
    planted = _planted_basis(k, seed=k)
    clean, cf, labels, codes = _code_pairs(400, planted, seed=10 + k)

    def loss_of(rotation, mask, chosen):
        patched = interchange(clean[chosen], cf[chosen], rotation, mask)
        return torch.nn.functional.cross_entropy(4.0 * (patched @ planted.T) @ codes.T, labels[chosen])

    settings = BoundlessSettings(steps=200, lr=0.05, boundary_lr=0.05, boundary_weight=1.0, temperature_start=4.0,
                                 temperature_end=0.05, batch_size=64, seed=0)
    fit = fit_boundless(D, loss_of, 400, settings)
    assert fit.size == k, fit.boundaries[::25]
    assert float(principal_angles(fit.rotation[:k], planted).max()) < 10.0
    if k == 2:
        again = fit_boundless(D, loss_of, 400, settings)
        assert again.size == fit.size and torch.equal(again.rotation, fit.rotation)  # same seed, same fit
