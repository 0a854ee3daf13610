"""Boundless DAS (after Wu et al. 2023, "Interpretability at Scale", and pyvene's boundless
rotated-space intervention; written anew here): DAS that learns the subspace's size too.

A learned orthogonal rotation R (d x d) and a learned boundary b in (0, 1]. Rotated coordinate i
(i = 0..d-1) is interchanged with weight

    mask_i = sigmoid((b * d - (i + 0.5)) / temperature)

so h' = h + R^T (mask * R (h_cf - h)); the temperature is annealed geometrically from
`temperature_start` to `temperature_end` (in units of coordinates) over the steps, which turns the
soft mask into a hard one: the first round(b * d) coordinates. Both learning rates (Adam) decay
linearly to 0 over the steps, so the boundary comes to rest instead of jittering by a step. The loss is the candidate
cross-entropy toward the counterfactual's answer plus `boundary_weight * b`, which pushes the
boundary down until dropping one more coordinate costs more than it saves. The size it settles on
is round(b * d) (at least 1); the subspace scored on held-out pairs is R[:size] with a hard mask.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from bindexp.errors import BindexpError
from bindexp.interventions.methods.das import (
    batch_order,
    counterfactual_sites,
    frozen,
    interchange_loss,
    orthogonal_rotation,
)
from bindexp.interventions.methods.subspace import Accuracy, SitePair, interchanged_logits, subspace_iia
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel


@dataclasses.dataclass(frozen=True)
class BoundlessSettings:
    steps: int = 200
    lr: float = 1e-2  # the rotation's
    boundary_lr: float = 1e-2
    boundary_weight: float = 1.0  # the loss's price per unit of b (the boundary as a share of d)
    boundary_init: float = 0.5
    temperature_start: float = 50.0
    temperature_end: float = 0.1
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.boundary_lr <= 0 or self.batch_size < 1:
            raise BindexpError("boundless DAS needs steps >= 1, lr > 0, boundary_lr > 0 and batch_size >= 1")
        if not 0 < self.boundary_init <= 1 or self.boundary_weight < 0:
            raise BindexpError("boundless DAS needs 0 < boundary_init <= 1 and boundary_weight >= 0")
        if not 0 < self.temperature_end <= self.temperature_start:
            raise BindexpError("boundless DAS needs 0 < temperature_end <= temperature_start")


def boundary_mask(d: int, boundary: torch.Tensor, temperature: float) -> torch.Tensor:
    """[d] interchange weights: ~1 for the first boundary * d rotated coordinates, ~0 after."""
    centres = torch.arange(d, dtype=torch.float32, device=boundary.device) + 0.5
    return torch.sigmoid((boundary * d - centres) / temperature)


def temperatures(settings: BoundlessSettings) -> list[float]:
    """The annealing schedule: geometric from temperature_start to temperature_end."""
    if settings.steps == 1:
        return [settings.temperature_end]
    ratio = math.log(settings.temperature_end / settings.temperature_start) / (settings.steps - 1)
    return [settings.temperature_start * math.exp(ratio * step) for step in range(settings.steps)]


def settled_size(d: int, boundary: float) -> int:
    """The subspace size a boundary stands for: round(b * d), within 1..d."""
    return min(d, max(1, int(round(boundary * d))))


@dataclasses.dataclass
class BoundlessFit:
    rotation: torch.Tensor  # [d, d]; R[:size] spans the subspace
    boundary: float
    size: int
    losses: list[float]  # the cross-entropy part, per step
    boundaries: list[float]  # b after each step


def fit_boundless(d: int, loss_of: Callable[[torch.Tensor, torch.Tensor, list[int]], torch.Tensor], n_train: int,
                  settings: BoundlessSettings, device: torch.device | str = "cpu") -> BoundlessFit:
    """Train the rotation and the boundary; loss_of(rotation [d, d], mask [d], training indices)
    is the interchange loss of one batch (without the boundary's price, added here)."""
    if n_train < 1:
        raise BindexpError("boundless DAS needs at least one training pair")
    rotation = orthogonal_rotation(d, settings.seed, device)
    boundary = torch.nn.Parameter(torch.tensor(float(settings.boundary_init), device=device))
    optimizer = torch.optim.Adam([{"params": rotation.parameters(), "lr": settings.lr},
                                  {"params": [boundary], "lr": settings.boundary_lr}])
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / settings.steps)  # linear to 0
    losses, boundaries = [], []
    for temperature, chosen in zip(temperatures(settings), batch_order(n_train, settings.batch_size, settings.steps,
                                                                       settings.seed)):
        optimizer.zero_grad()
        loss = loss_of(rotation.weight, boundary_mask(d, boundary, temperature), chosen)
        (loss + settings.boundary_weight * boundary).backward()
        optimizer.step()
        decay.step()
        with torch.no_grad():
            boundary.clamp_(1.0 / d, 1.0)
        losses.append(float(loss.detach()))
        boundaries.append(float(boundary.detach()))
    with torch.no_grad():
        final = float(boundary.detach())
        return BoundlessFit(rotation.weight.detach().float().cpu().clone(), final, settled_size(d, final), losses,
                            boundaries)


@dataclasses.dataclass
class BoundlessResult:
    layer: int
    size: int  # the subspace size it settled on
    boundary: float
    heldout: Accuracy  # the hard subspace R[:size] on held-out pairs
    train: Accuracy
    losses: np.ndarray  # [steps]
    boundaries: np.ndarray  # [steps]
    rotation: torch.Tensor
    settings: BoundlessSettings

    @property
    def basis(self) -> torch.Tensor:
        return self.rotation[: self.size]


def boundless_das(lm: LoadedModel, layer: int, train: Sequence[SitePair], heldout: Sequence[SitePair],
                  settings: BoundlessSettings = BoundlessSettings(), *,
                  prefix: SharedPrefix | None = None) -> BoundlessResult:
    """Boundless DAS at resid_pre of `layer` (each pair's positions), trained on `train`, its hard
    subspace scored on `heldout`; the two sets share no program text."""
    d, train_acts, heldout_acts = counterfactual_sites(lm, layer, train, heldout, prefix)

    def loss_of(rotation: torch.Tensor, mask: torch.Tensor, chosen: list[int]) -> torch.Tensor:
        pairs = [train[i] for i in chosen]
        logits = interchanged_logits(lm, layer, pairs, [train_acts[i] for i in chosen], rotation, prefix=prefix,
                                     weights=mask)
        return interchange_loss(logits, pairs)

    with frozen(lm.model):
        fit = fit_boundless(d, loss_of, len(train), settings, lm.device)
    basis = fit.rotation[: fit.size]
    scores = [subspace_iia(lm, layer, pairs, acts, basis, prefix=prefix, batch_size=settings.batch_size)
              for pairs, acts in ((heldout, heldout_acts), (train, train_acts))]
    return BoundlessResult(layer, fit.size, fit.boundary, scores[0], scores[1], np.array(fit.losses),
                           np.array(fit.boundaries), fit.rotation, settings)
