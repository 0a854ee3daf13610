"""The paper's subspace method: PCA of a site's activations, an L1-regularised linear probe on
the PCA coordinates for one variable (the value digit, or the variable name), and interchange
of the components the probe selects.

    result = pca_probe_subspace(lm, layer, train, heldout, n_classes=10, settings=ProbeSettings(l1=0.02))
    result.selected, result.heldout.value, result.heldout.ci_low

Steps: (1) PCA (SVD of the centred activations) of resid_pre at each training pair's site
positions, clean and counterfactual prompts alike, one row per (prompt, position), labelled with
that prompt's `label` / `cf_label`; (2) a multinomial logistic probe on the *standardised* PCA
coordinates (each divided by its standard deviation, so the L1 penalty weighs every component
alike; the coordinates are then whitened, which makes a unit step size safe), trained by
proximal gradient descent (ISTA: exact zeros), plain torch; (3) the components with any non-zero
weight span the subspace, and interchanging it (those PCA coordinates from the counterfactual,
the rest clean) is scored on held-out pairs as IIA with a Wilson interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from bindexp.errors import BindexpError
from bindexp.interventions.methods.subspace import Accuracy, SitePair, check_disjoint, site_activations, subspace_iia
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel


@dataclasses.dataclass(frozen=True)
class Pca:
    mean: torch.Tensor  # [d]
    components: torch.Tensor  # [m, d], orthonormal rows, by decreasing variance
    variance: torch.Tensor  # [m] variance of the data along each component

    def coordinates(self, activations: torch.Tensor) -> torch.Tensor:
        return (activations.float() - self.mean) @ self.components.T


def pca(activations: torch.Tensor, n_components: int | None = None) -> Pca:
    """Principal components of rows of `activations` [n, d] (float32)."""
    data = activations.float()
    mean = data.mean(0)
    _, singular, vh = torch.linalg.svd(data - mean, full_matrices=False)
    m = vh.shape[0] if n_components is None else min(n_components, vh.shape[0])
    return Pca(mean, vh[:m].contiguous(), singular[:m] ** 2 / max(len(data) - 1, 1))


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    l1: float = 0.01  # penalty on the absolute weights, per example
    steps: int = 500
    lr: float = 1.0  # step size on whitened coordinates
    n_components: int | None = None  # PCA components kept (None: all)

    def __post_init__(self) -> None:
        if self.l1 < 0 or self.steps < 1 or self.lr <= 0:
            raise BindexpError("the probe needs l1 >= 0, steps >= 1 and lr > 0")


@dataclasses.dataclass(frozen=True)
class Probe:
    weight: torch.Tensor  # [classes, m]
    bias: torch.Tensor  # [classes]
    accuracy: float  # on the rows it was trained on

    @property
    def selected(self) -> list[int]:
        """Coordinates with a non-zero weight for any class."""
        return torch.nonzero(self.weight.abs().amax(0) > 0).flatten().tolist()


def l1_probe(coordinates: torch.Tensor, labels: torch.Tensor, n_classes: int, settings: ProbeSettings) -> Probe:
    """Multinomial logistic regression with an L1 penalty on the weights (not the bias), by
    proximal gradient descent from zero weights (deterministic)."""
    x = coordinates.float()
    weight = torch.zeros(n_classes, x.shape[1])
    bias = torch.zeros(n_classes)
    for _ in range(settings.steps):
        weight.requires_grad_(True)
        bias.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, labels)
        grad_w, grad_b = torch.autograd.grad(loss, (weight, bias))
        with torch.no_grad():
            step = weight - settings.lr * grad_w
            weight = step.sign() * (step.abs() - settings.lr * settings.l1).clamp(min=0)  # soft threshold
            bias = bias - settings.lr * grad_b
    with torch.no_grad():
        accuracy = float(((x @ weight.T + bias).argmax(-1) == labels).float().mean())
    return Probe(weight.detach(), bias.detach(), accuracy)


def probe_subspace(activations: torch.Tensor, labels: torch.Tensor, n_classes: int,
                   settings: ProbeSettings) -> tuple[Pca, Probe, torch.Tensor]:
    """(pca, probe, basis): the basis's rows [k, d] are the PCA components the probe selects."""
    fitted = pca(activations, settings.n_components)
    coordinates = fitted.coordinates(activations)
    scale = coordinates.std(0).clamp(min=1e-8)
    probe = l1_probe(coordinates / scale, labels, n_classes, settings)
    return fitted, probe, fitted.components[probe.selected]


@dataclasses.dataclass
class PcaProbeResult:
    layer: int
    selected: list[int]  # indices of the selected PCA components (0 = most variance)
    explained_variance: np.ndarray  # share of variance per kept component
    probe_accuracy: float  # on the training rows
    heldout: Accuracy
    basis: torch.Tensor  # [len(selected), d]
    n_train: int

    def summary(self) -> dict:
        return {"layer": self.layer, "k": len(self.selected), "iia": self.heldout.value,
                "iia_ci_low": self.heldout.ci_low, "iia_ci_high": self.heldout.ci_high, "n_heldout": self.heldout.n,
                "n_train": self.n_train, "probe_accuracy": self.probe_accuracy,
                "selected_variance": float(self.explained_variance[self.selected].sum())}


def pca_probe_subspace(lm: LoadedModel, layer: int, train: Sequence[SitePair], heldout: Sequence[SitePair],
                       n_classes: int, settings: ProbeSettings = ProbeSettings(), *,
                       prefix: SharedPrefix | None = None) -> PcaProbeResult:
    """PCA + L1 probe subspace at resid_pre of `layer`, fit on `train` (labels from each pair's
    label / cf_label), scored by held-out IIA; train and held-out share no program text."""
    check_disjoint(train, heldout)
    if not heldout or not train:
        raise BindexpError("the PCA probe needs training and held-out pairs")
    if any(p.label is None or p.cf_label is None for p in train):
        raise BindexpError("every training pair needs the probed variable's label on both sides")
    sequences = [p.ids for p in train] + [p.cf_ids for p in train]
    positions = [p.positions for p in train] * 2
    acts = site_activations(lm, layer, sequences, positions, prefix=prefix)
    labels = [p.label for p in train] + [p.cf_label for p in train]
    rows = torch.cat(acts).float().cpu()
    row_labels = torch.tensor([label for a, label in zip(acts, labels) for _ in range(len(a))])
    fitted, probe, basis = probe_subspace(rows, row_labels, n_classes, settings)
    if not probe.selected:
        raise BindexpError(f"the probe selected no component (l1={settings.l1} too strong)")
    cf_acts = site_activations(lm, layer, [p.cf_ids for p in heldout], [p.positions for p in heldout], prefix=prefix)
    accuracy = subspace_iia(lm, layer, heldout, cf_acts, basis, prefix=prefix)
    total = float(((rows - fitted.mean) ** 2).sum(1).mean()) * len(rows) / max(len(rows) - 1, 1)
    return PcaProbeResult(layer, probe.selected, (fitted.variance / total).numpy(), probe.accuracy, accuracy,
                          basis, len(train))
