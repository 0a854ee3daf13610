"""Controls for a subspace claim: what a learned subspace's IIA must be compared with.

- `difference_pca(clean, cf, k)`: the top-k principal directions of the differences x_cf - x over
  the *training* pairs (the right singular vectors of the uncentred difference matrix: the
  directions holding most of E|x_cf - x|^2). No learning: if these directions interchange as well
  as DAS, DAS found the direction the counterfactual moves the activation in, nothing more.
- `random_subspace(d, k, seed)`: an orthonormal k-dim basis from the QR of a seeded Gaussian
  matrix (several seeds: a chance level with its spread).
- `subspace_shares(basis, clean, cf)`: what a subspace holds of the activations -- its share of
  their variance and of E|x_cf - x|^2 -- on the pairs given (held-out pairs in the runs). A subspace
  holding 97% of both is close to patching the whole residual, whatever its k.
- `score_bases(...)`: each named basis's IIA (with its Wilson interval, from a scorer the caller
  gives: the model's held-out interchange, or a toy's) and its shares, as rows of a table.

Pure torch on [n, d] activations: the job computes them at the site and gives the scorer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from bindexp.errors import BindexpError
from bindexp.interventions.methods.subspace import Accuracy


def difference_pca(clean: torch.Tensor, cf: torch.Tensor, k: int) -> torch.Tensor:
    """[k, d] orthonormal rows: the top-k right singular vectors of (cf - clean) ([n, d] each),
    uncentred. k may exceed the rank of the differences: the rows beyond it are the remaining
    singular vectors (arbitrary within the null space), so k = d still spans everything."""
    differences = (cf.double() - clean.double()).reshape(-1, clean.shape[-1])
    d = differences.shape[1]
    if not 1 <= k <= d:
        raise BindexpError(f"k must lie in 1..{d}, got {k}")
    _, _, vh = torch.linalg.svd(differences, full_matrices=True)
    return vh[:k].float().contiguous()


def random_subspace(d: int, k: int, seed: int) -> torch.Tensor:
    """[k, d] orthonormal rows spanning a random k-dim subspace (QR of a seeded Gaussian d x k
    matrix: uniform over subspaces), the same for the same (d, k, seed)."""
    if not 1 <= k <= d:
        raise BindexpError(f"k must lie in 1..{d}, got {k}")
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(d, k, generator=generator, dtype=torch.float64)
    return torch.linalg.qr(gaussian).Q.T.float().contiguous()


def subspace_shares(basis: torch.Tensor, clean: torch.Tensor, cf: torch.Tensor) -> dict[str, float]:
    """variance_share: the share of the variance of x (clean and counterfactual rows together,
    centred) along the basis's rows; difference_share: E|B(x_cf - x)|^2 / E|x_cf - x|^2."""
    basis = torch.linalg.qr(basis.double().T).Q.T  # orthonormal rows (they are already, up to rounding)
    rows = torch.cat([clean, cf]).double().reshape(-1, basis.shape[1])
    centred = rows - rows.mean(0)
    differences = (cf.double() - clean.double()).reshape(-1, basis.shape[1])
    total_variance, total_difference = float((centred**2).sum()), float((differences**2).sum())
    return {"variance_share": float(((centred @ basis.T) ** 2).sum()) / total_variance if total_variance else float("nan"),
            "difference_share": float(((differences @ basis.T) ** 2).sum()) / total_difference
            if total_difference else float("nan")}


@dataclasses.dataclass(frozen=True)
class Basis:
    """A subspace to score: its method, k, the seed (random controls) and rows [k, d]."""

    method: str
    k: int
    rows: torch.Tensor
    seed: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. train_iia, a boundless run's size
    accuracy: Accuracy | None = None  # its held-out IIA when the method already scored it (DAS, the probe)


def control_bases(train_clean: torch.Tensor, train_cf: torch.Tensor, ks: Sequence[int], seeds: Sequence[int]
                  ) -> list[Basis]:
    """The difference-PCA basis (from the training pairs' differences) and one random basis per
    seed, for every k."""
    d = train_clean.shape[-1]
    bases = []
    for k in ks:
        bases.append(Basis("diff_pca", k, difference_pca(train_clean, train_cf, k)))
        bases += [Basis("random", k, random_subspace(d, k, seed), seed=seed) for seed in seeds]
    return bases


def score_bases(bases: Sequence[Basis], scorer: Callable[[torch.Tensor], Accuracy], clean: torch.Tensor,
                cf: torch.Tensor) -> list[dict[str, Any]]:
    """One row per basis: method, k, seed, held-out IIA (successes / n, Wilson interval) from
    `scorer(rows)`, and its shares of `clean` / `cf` (the held-out activations)."""
    out = []
    for basis in bases:
        accuracy = basis.accuracy if basis.accuracy is not None else scorer(basis.rows)
        out.append({"method": basis.method, "k": basis.k, "seed": basis.seed, "iia": accuracy.value,
                    "iia_ci_low": accuracy.ci_low, "iia_ci_high": accuracy.ci_high, "successes": accuracy.successes,
                    "n_heldout": accuracy.n, **subspace_shares(basis.rows, clean, cf), **basis.extra})
    return out


def random_summary(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """k -> the random controls' mean IIA over seeds, its min and max, the seeds and n."""
    by_k: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["method"] == "random":
            by_k.setdefault(row["k"], []).append(row)
    return {k: {"iia_mean": sum(r["iia"] for r in group) / len(group), "iia_min": min(r["iia"] for r in group),
                "iia_max": max(r["iia"] for r in group), "seeds": len(group), "n_heldout": group[0]["n_heldout"],
                "variance_share_mean": sum(r["variance_share"] for r in group) / len(group),
                "difference_share_mean": sum(r["difference_share"] for r in group) / len(group)}
            for k, group in sorted(by_k.items())}
