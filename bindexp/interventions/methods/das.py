"""Distributed alignment search (DAS): learn an orthogonal rotation R (d x d) at one residual
site so that interchanging the first k rotated coordinates of the clean activation with the
counterfactual's makes the model give the counterfactual's answer.

    train, heldout = split_pairs(site_pairs(tokenized, "root_value"), n_heldout=20, seed=0)
    result = das(lm, layer=5, train=train, heldout=heldout, ks=[1, 4, 16], settings=DasSettings())
    result.to_frame(); result.rotation_bundle()

Loss: cross-entropy of the interchanged run's final logits *restricted to the candidate answer
tokens* (the digits) toward the counterfactual answer -- the same candidates IIA takes its argmax
over. R is `torch.nn.utils.parametrizations.orthogonal` on a bias-free d x d linear map, drawn
from the seed; its first k rows span the interchanged subspace. The model's own weights are
frozen while R trains (their requires_grad flags are restored afterwards).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch

from bindexp.errors import BindexpError
from bindexp.interventions.methods.subspace import (
    Accuracy,
    SitePair,
    check_disjoint,
    interchanged_logits,
    site_activations,
    subspace_iia,
)
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel


@dataclasses.dataclass(frozen=True)
class DasSettings:
    steps: int = 200
    lr: float = 1e-2
    batch_size: int = 8
    seed: int = 0
    optimizer: Literal["adam"] = "adam"

    def __post_init__(self) -> None:
        if self.optimizer != "adam":
            raise BindexpError(f"DAS supports the 'adam' optimizer, not {self.optimizer!r}")
        if self.steps < 0 or self.lr <= 0 or self.batch_size < 1:
            raise BindexpError("DAS needs steps >= 0, lr > 0 and batch_size >= 1")


def orthogonal_rotation(d: int, seed: int, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A bias-free d x d linear map kept orthogonal (`torch.nn.utils.parametrizations.orthogonal`),
    drawn on the CPU from `seed` (its `.weight` is the rotation R)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(d, d, bias=False)).to(device)


def batch_order(n_train: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """`steps` batches of training indices walking a seeded permutation, epoch after epoch."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < min(batch_size, n_train):
            order += torch.randperm(n_train, generator=generator).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        yield chosen


def fit_rotation(d: int, k: int, loss_of: Callable[[torch.Tensor, list[int]], torch.Tensor], n_train: int,
                 settings: DasSettings, device: torch.device | str = "cpu") -> tuple[torch.Tensor, list[float]]:
    """Train an orthogonal d x d rotation (float32, drawn on the CPU from the seed, trained on
    `device`); loss_of(basis [k, d], training indices) is the loss of one batch. Returns
    (R [d, d] on the CPU, loss per step). Batches walk a seeded permutation of the training
    indices, epoch after epoch."""
    if not 1 <= k <= d:
        raise BindexpError(f"k must lie in 1..{d}, got {k}")
    if n_train < 1:
        raise BindexpError("DAS needs at least one training pair")
    rotation = orthogonal_rotation(d, settings.seed, device)
    optimizer = torch.optim.Adam(rotation.parameters(), lr=settings.lr)
    losses = []
    for chosen in batch_order(n_train, settings.batch_size, settings.steps, settings.seed):
        optimizer.zero_grad()
        loss = loss_of(rotation.weight[:k], chosen)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        return rotation.weight.detach().float().cpu().clone(), losses


@contextlib.contextmanager
def frozen(model: Any) -> Iterator[None]:
    """Turn off requires_grad on the model's weights for the block; restore the flags after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def interchange_loss(logits: torch.Tensor, pairs: Sequence[SitePair]) -> torch.Tensor:
    """Mean cross-entropy over the candidate tokens toward each pair's counterfactual answer."""
    candidates = torch.tensor([p.candidates for p in pairs], device=logits.device)
    targets = torch.tensor([p.candidates.index(p.cf_answer) for p in pairs], device=logits.device)
    return torch.nn.functional.cross_entropy(logits.gather(1, candidates), targets)


@dataclasses.dataclass
class DasResult:
    """Held-out IIA per k (Wilson intervals), training curves and the learned rotations."""

    layer: int
    ks: list[int]
    heldout: list[Accuracy]  # one per k
    train: list[Accuracy]  # IIA on the training pairs, one per k (far above held-out: overfitting)
    losses: np.ndarray  # [len(ks), steps]
    rotations: dict[int, torch.Tensor]  # k -> R [d, d]; R[:k] spans the subspace
    n_train: int
    settings: DasSettings

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{"layer": self.layer, "k": k, "iia": a.value, "iia_ci_low": a.ci_low,
                              "iia_ci_high": a.ci_high, "n_heldout": a.n, "train_iia": t.value,
                              "n_train": self.n_train,
                              "final_loss": float(self.losses[i, -1]) if self.losses.shape[1] else float("nan")}
                             for i, (k, a, t) in enumerate(zip(self.ks, self.heldout, self.train))])

    def rotation_bundle(self, metadata: dict[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Every rotation (tensor "k<k>") and what describes them (layer, ks, settings, `metadata`):
        a tensor bundle for `bindexp.io.tensors`."""
        info = {"layer": self.layer, "ks": self.ks, "settings": dataclasses.asdict(self.settings), **(metadata or {})}
        return {f"k{k}": r.contiguous() for k, r in self.rotations.items()}, info


def counterfactual_sites(lm: LoadedModel, layer: int, train: Sequence[SitePair], heldout: Sequence[SitePair],
                         prefix: SharedPrefix | None) -> tuple[int, list[torch.Tensor], list[torch.Tensor]]:
    """What every learned interchange checks and needs first: disjoint sets, held-out pairs,
    counterfactual answers among the candidates; (the residual width, the counterfactual run's
    site activations of the training pairs, of the held-out pairs)."""
    check_disjoint(train, heldout)
    if not heldout:
        raise BindexpError("a learned subspace needs held-out pairs to score")
    for p in [*train, *heldout]:
        if p.cf_answer not in p.candidates:
            raise BindexpError("a pair's counterfactual answer is not among its candidate tokens")
    train_acts = site_activations(lm, layer, [p.cf_ids for p in train], [p.positions for p in train], prefix=prefix)
    heldout_acts = site_activations(lm, layer, [p.cf_ids for p in heldout], [p.positions for p in heldout],
                                    prefix=prefix)
    return lm.model.config.get_text_config().hidden_size, train_acts, heldout_acts


def das(lm: LoadedModel, layer: int, train: Sequence[SitePair], heldout: Sequence[SitePair], ks: Sequence[int],
        settings: DasSettings = DasSettings(), *, prefix: SharedPrefix | None = None) -> DasResult:
    """Train one rotation per k at resid_pre of `layer` (each pair's positions) on `train`, and
    score it on `heldout`; the two sets must share no program text."""
    d, train_acts, heldout_acts = counterfactual_sites(lm, layer, train, heldout, prefix)
    if not ks or any(not 1 <= k <= d for k in ks):
        raise BindexpError(f"every k must lie in 1..{d} (the residual width), got {list(ks)}")

    def loss_of(basis: torch.Tensor, chosen: list[int]) -> torch.Tensor:
        pairs = [train[i] for i in chosen]
        logits = interchanged_logits(lm, layer, pairs, [train_acts[i] for i in chosen], basis, prefix=prefix)
        return interchange_loss(logits, pairs)

    rotations, heldout_iia, train_iia, curves = {}, [], [], []
    with frozen(lm.model):
        for k in ks:
            rotation, losses = fit_rotation(d, k, loss_of, len(train), settings, lm.device)
            rotations[k] = rotation
            curves.append(losses)
            for pairs, acts, out in ((heldout, heldout_acts, heldout_iia), (train, train_acts, train_iia)):
                out.append(subspace_iia(lm, layer, pairs, acts, rotation[:k], prefix=prefix,
                                        batch_size=settings.batch_size))
    return DasResult(layer, list(ks), heldout_iia, train_iia,
                     np.array(curves, dtype=float).reshape(len(ks), settings.steps), rotations, len(train), settings)


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles in degrees (ascending) between the row spaces of a [k1, d] and b [k2, d]
    (rows orthonormalised first)."""
    qa = torch.linalg.qr(a.double().T).Q
    qb = torch.linalg.qr(b.double().T).Q
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cosines)).float()
