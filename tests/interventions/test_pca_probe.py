"""PCA + L1 probe: on planted activations the probe selects the value's components and
interchanging them moves a readout; on a tiny model, selecting every component is full
interchange."""

import pytest
import torch

from bindexp.errors import BindexpError
from bindexp.interventions.engine.plan import tokenize_pairs
from bindexp.interventions.methods.das import principal_angles
from bindexp.interventions.methods.probe import ProbeSettings, l1_probe, pca, pca_probe_subspace, probe_subspace
from bindexp.interventions.methods.subspace import interchange, site_pairs
from bindexp.tasks.counterfactuals import make_pairs

D = 12


def _directions(generator):
    return torch.linalg.qr(torch.randn(D, D, generator=generator)).Q.T  # orthonormal rows


def _planted(n, generator, directions):
    """Rows whose value (0..9) sits on a circle of radius 2 along directions[4:6]; loud noise
    (std 3) along directions[:4], faint noise (std 0.3) along the rest. By variance the value's
    directions are therefore the 5th and 6th principal components."""
    values = torch.randint(0, 10, (n,), generator=generator)
    angles = values.float() * (2 * torch.pi / 10)
    coefficients = torch.randn(n, D, generator=generator) * 0.3
    coefficients[:, :4] = torch.randn(n, 4, generator=generator) * 3.0
    coefficients[:, 4] = 2.0 * angles.cos() + 0.1 * torch.randn(n, generator=generator)
    coefficients[:, 5] = 2.0 * angles.sin() + 0.1 * torch.randn(n, generator=generator)
    return coefficients @ directions + 5.0, values  # an offset, which PCA must remove


def _readout(h, directions):
    angles = torch.arange(10).float() * (2 * torch.pi / 10)
    prototypes = torch.stack([angles.cos(), angles.sin()], dim=1)
    return ((h - 5.0) @ directions[4:6].T) @ prototypes.T


def test_probe_selects_the_planted_components_and_their_interchange_moves_the_readout():
    generator = torch.Generator().manual_seed(5)
    directions = _directions(generator)
    train, labels = _planted(600, generator, directions)
    fitted, probe, basis = probe_subspace(train, labels, 10, ProbeSettings(l1=0.03, steps=300))
    assert probe.selected == [4, 5]
    assert probe.accuracy > 0.8  # chance is 0.1; the L1 penalty shrinks the weights
    assert float(principal_angles(basis, directions[4:6]).max()) < 5.0
    assert float(fitted.variance[3]) > 2 * float(fitted.variance[4])  # the value is not the loudest signal

    clean, _ = _planted(200, generator, directions)
    cf, cf_values = _planted(200, generator, directions)
    moved = _readout(interchange(clean, cf, basis), directions).argmax(-1)
    assert float((moved == cf_values).float().mean()) > 0.95
    loudest = _readout(interchange(clean, cf, fitted.components[:2]), directions).argmax(-1)
    assert float((loudest == cf_values).float().mean()) < 0.3


def test_pca_components_are_orthonormal_and_ordered():
    generator = torch.Generator().manual_seed(2)
    data = torch.randn(300, 5, generator=generator) * torch.tensor([5.0, 1.0, 3.0, 0.5, 2.0])
    fitted = pca(data)
    torch.testing.assert_close(fitted.components @ fitted.components.T, torch.eye(5), atol=1e-5, rtol=0)
    assert fitted.variance.tolist() == sorted(fitted.variance.tolist(), reverse=True)
    torch.testing.assert_close(fitted.variance.sum(), data.var(0).sum(), rtol=1e-5, atol=0)
    assert fitted.components[0].abs().argmax() == 0 and pca(data, 2).components.shape == (2, 5)


def test_stronger_l1_selects_fewer_components():
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(400, 6, generator=generator)
    labels = (x[:, 0] > 0).long()  # only coordinate 0 carries the label
    weak = l1_probe(x, labels, 2, ProbeSettings(l1=0.0, steps=200))
    strong = l1_probe(x, labels, 2, ProbeSettings(l1=0.1, steps=200))
    assert weak.selected == list(range(6))
    assert strong.selected == [0]  # exact zeros elsewhere
    assert strong.accuracy > 0.8


def test_every_component_at_the_first_layer_is_full_interchange(tiny_llama):
    items, _ = tokenize_pairs(tiny_llama, make_pairs("root_value", 8, 6, 9, hops=2))
    pairs = site_pairs(items, None, label=lambda program: int(program.answer))
    result = pca_probe_subspace(tiny_llama, 0, pairs[:6], pairs[6:], 10, ProbeSettings(l1=0.0, steps=20))
    rows = sum(2 * len(p.positions) for p in pairs[:6])
    assert rows > tiny_llama.model.config.hidden_size  # enough rows for a full-rank PCA
    assert result.selected == list(range(tiny_llama.model.config.hidden_size))
    hits = 0
    for p in pairs[6:]:  # with the whole space interchanged the clean run becomes the counterfactual run
        with torch.no_grad():
            logits = tiny_llama.model(input_ids=torch.tensor([p.cf_ids])).logits[0, -1]
        hits += p.candidates[int(logits[list(p.candidates)].argmax())] == p.cf_answer
    assert result.heldout.successes == hits and result.heldout.n == 2
    assert result.summary()["selected_variance"] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(BindexpError, match="both the training and the held-out"):
        pca_probe_subspace(tiny_llama, 0, pairs[:6], pairs[5:], 10)
