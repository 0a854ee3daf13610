"""The subspace job (job_type `subspace`): in which subspace of the residual stream, at one (layer, role)
site, does the model carry the variable? DAS for each k, and the paper's PCA + L1 probe subspace.

    outcome = run_subspace(SubspaceSettings(model="smollm2-135m", hops=2, seq_len=6, ks=[1, 4, 16, 64]))
    outcome.frame            # method, k, held-out IIA with its Wilson interval, training IIA ...
    outcome.das.rotations    # k -> R [d, d]; R[:k] spans the learned subspace

Pairs: the patch runner's (n_train + n_heldout of them), split by the seed into training and
held-out pairs that share no program (asserted before any training). The layer, unless given, is
the best layer of an exact resid_pre patch at `role` over the *training* pairs only. The held-out
IIA of patching the whole residual vector at the site is reported beside the subspaces' (what a
full-rank subspace would reach). The rotations (safetensors) and the probe's basis are logged as
an artifact; DAS's loss per step is in the W&B history (x axis `das_step`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from bindexp.errors import BindexpError, InputError
from bindexp.interventions.engine.plan import GridPlan
from bindexp.interventions.methods.das import DasResult, DasSettings, das
from bindexp.interventions.methods.exact import patch_cells
from bindexp.interventions.methods.probe import PcaProbeResult, ProbeSettings, pca_probe_subspace
from bindexp.interventions.methods.subspace import check_disjoint, site_pairs, split_pairs
from bindexp.io.folder import (
    DAS_CURVE_FILE,
    HELDOUT_PAIRS_FILE,
    PROBE_BASIS_FILE,
    ROTATIONS_FILE,
    SUBSPACE_FILE,
    TRAIN_PAIRS_FILE,
)
from bindexp.io.tensors import write_bundle, write_tensors
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.models.loading import LoadedModel
from bindexp.plots.analyses import loss_figure
from bindexp.runs.analysis import Analysis, AnalysisRun, run_analysis
from bindexp.runs.pairs import candidate_pairs
from bindexp.runs.settings import PairSettings, positive_list
from bindexp.stats import wilson_interval
from bindexp.tasks.registry import get_task


class SubspaceSettings(PairSettings):
    """`scripts/subspace.py`: DAS (k in a list) and the PCA + L1 probe subspace at one (layer, role)
    site, trained on n_train pairs and scored on n_heldout pairs that share no program with them."""

    layer: int | None = Field(None, description="resid_pre layer (None: the best layer of an exact resid_pre "
                                                "patch at `role` over the training pairs)")
    role: str = Field("root_value", description="the token role of the site")
    ks: list[int] = Field([1, 4, 16, 64], description="DAS subspace dimensions")
    n_train: int = Field(64, ge=1)
    n_heldout: int = Field(20, ge=1)
    optimizer: Literal["adam"] = "adam"
    steps: int = Field(200, ge=0, description="DAS optimizer steps per k")
    lr: float = Field(1e-2, gt=0)
    das_batch_size: int = Field(8, ge=1, description="training pairs per DAS step")
    probe: Literal["value", "variable", "none"] = Field(
        "value", description="PCA + L1 probe for the answer digit (value) or the query variable's letter "
                             "(variable: pair with counterfactual=query_chain, role=query_var), or none")
    probe_l1: float = Field(0.01, ge=0)
    probe_steps: int = Field(500, ge=1)
    probe_components: int | None = Field(None, ge=1, description="PCA components kept (None: all)")

    @field_validator("ks")
    @classmethod
    def _ks_positive(cls, ks: list[int]) -> list[int]:
        return positive_list(ks, "ks must be positive subspace dimensions")

    @model_validator(mode="after")
    def _pairs_from_the_split(self) -> SubspaceSettings:
        wanted = self.n_train + self.n_heldout
        if "num_programs" in self.model_fields_set and self.num_programs != wanted:
            raise ValueError("a subspace run draws n_train + n_heldout pairs: set those, not num_programs")
        self.__dict__["num_programs"] = wanted
        return self


@dataclasses.dataclass
class SubspaceOutcome:
    frame: pd.DataFrame  # one row per method x k: held-out IIA with its interval, training IIA
    das: DasResult
    probe: PcaProbeResult | None
    layer: int
    summary: dict[str, Any]
    out_dir: Path


def _subplan(plan: GridPlan, pairs) -> GridPlan:
    texts = {p.texts for p in pairs}
    return dataclasses.replace(plan, tokenized=[t for t in plan.tokenized
                                                if (t.pair.original.text, t.pair.counterfactual.text) in texts])


def resid_patch(plan: GridPlan, role: str, layers: list[int], batch_size: int):
    """The exact resid_pre patch grid restricted to `role`'s column at `layers`."""
    return patch_cells(plan, only={(layer, role) for layer in layers}, cells_per_forward=batch_size)


def resid_patch_hits(plan: GridPlan, role: str, layer: int, batch_size: int) -> tuple[int, int]:
    """(pairs whose prediction becomes the counterfactual answer when the whole residual entering
    `layer` at `role` is patched from the counterfactual run, pairs measured there)."""
    grid = resid_patch(plan, role, [layer], batch_size)
    cell = (grid.labels["layer"].index(layer), grid.labels["role"].index(role))  # the grid keeps every layer
    n = int(grid.counts["iia"][cell])
    return (int(round(float(grid.mean["iia"][cell]) * n)) if n else 0), n


def best_layer(plan: GridPlan, role: str, batch_size: int) -> int:
    """The layer where patching `role`'s residual moves the output most (mean normalized effect)."""
    grid = resid_patch(plan, role, plan.layers, batch_size)
    effects = grid.mean["normalized_effect"][:, grid.labels["role"].index(role)]
    if not np.isfinite(effects).any():
        raise BindexpError(f"patching {role} moves no training pair's output: give --layer")
    return grid.labels["layer"][int(np.nanargmax(effects))]


def _check_request(settings: SubspaceSettings, shots) -> None:
    program = candidate_pairs(settings, 1, shots)[0].original
    if settings.role not in program.spans:
        raise InputError(f"role {settings.role!r} is not a token role of these programs ({', '.join(program.spans)})")
    labels = get_task(settings.task).probe_labels
    if settings.probe != "none" and settings.probe not in labels:
        raise InputError(f"probe={settings.probe} needs a label the {settings.task} task declares "
                         f"({', '.join(labels)})")


def _check_model(settings: SubspaceSettings, lm: LoadedModel) -> None:
    width = lm.model.config.get_text_config().hidden_size
    if max(settings.ks) > width:
        raise InputError(f"every k must lie in 1..{width} (the residual width), got {settings.ks}")
    if settings.layer is not None and not 0 <= settings.layer < lm.n_layers:
        raise InputError(f"layer must lie in 0..{lm.n_layers - 1}, got {settings.layer}")


@dataclasses.dataclass
class _Measured:
    das: DasResult
    probe: PcaProbeResult | None
    probe_error: str | None
    frame: pd.DataFrame
    layer: int
    train: list
    heldout: list
    train_pairs: list  # the tokenized pairs behind `train` and `heldout`
    heldout_pairs: list
    full_hits: int
    full_n: int
    looked_at: int


def _compute(run: AnalysisRun) -> _Measured:
    settings, lm = run.settings, run.lm
    pairs, looked_at, plan = run.pairs_and_plan()
    label, n_classes = get_task(settings.task).probe_labels.get(settings.probe, (None, 0))
    train, heldout = split_pairs(site_pairs(plan.tokenized, settings.role, label), settings.n_heldout, settings.seed)
    check_disjoint(train, heldout)  # held-out pairs never train
    layer = settings.layer if settings.layer is not None else \
        best_layer(_subplan(plan, train), settings.role, settings.batch_size)
    full_hits, full_n = resid_patch_hits(_subplan(plan, heldout), settings.role, layer, settings.batch_size)
    das_settings = DasSettings(steps=settings.steps, lr=settings.lr, batch_size=settings.das_batch_size,
                               seed=settings.seed, optimizer=settings.optimizer)
    result = das(lm, layer, train, heldout, settings.ks, das_settings, prefix=plan.prefix)
    probe, probe_error = None, None
    if label is not None:
        try:
            probe = pca_probe_subspace(lm, layer, train, heldout, n_classes, ProbeSettings(
                l1=settings.probe_l1, steps=settings.probe_steps, n_components=settings.probe_components),
                prefix=plan.prefix)
        except BindexpError as err:
            probe_error = str(err)
    return _Measured(result, probe, probe_error, subspace_frame(result, probe, settings.probe), layer, train, heldout,
                     _subplan(plan, train).tokenized, _subplan(plan, heldout).tokenized, full_hits, full_n, looked_at)


def _write(run: AnalysisRun, m: _Measured) -> list[Path]:
    settings, folder = run.settings, run.tracker.folder
    files = [run.write_pairs(TRAIN_PAIRS_FILE, m.train_pairs), run.write_pairs(HELDOUT_PAIRS_FILE, m.heldout_pairs)]
    files.append(write_bundle(folder.file(ROTATIONS_FILE), *m.das.rotation_bundle({"role": settings.role})))
    if m.probe is not None:
        files.append(write_tensors(folder.file(PROBE_BASIS_FILE), {"basis": m.probe.basis.contiguous()},
                                   {"layer": str(m.layer), "role": settings.role, "selected": str(m.probe.selected)}))
    files.append(run.write_table("subspace", m.frame, SUBSPACE_FILE))
    result = m.das
    run.tracker.log_steps("das_step", [{"das_step": step, **{f"loss_k{k}": float(result.losses[i, step])
                                                             for i, k in enumerate(result.ks)}}
                                       for step in range(result.losses.shape[1])], "das")
    files.append(run.write_figure("das_loss", loss_figure(result, f"{run.lm.name}: DAS at layer {m.layer}, "
                                                                  f"{settings.role}"), DAS_CURVE_FILE))
    return files


def _summarize(run: AnalysisRun, m: _Measured) -> dict[str, Any]:
    settings, frame = run.settings, m.frame
    low, high = wilson_interval(m.full_hits, m.full_n)
    summary = {"layer": m.layer, "layer_chosen_by": "given" if settings.layer is not None else
               "exact resid_pre patch at the role over the training pairs (best normalized effect)",
               "role": settings.role, "n_train": len(m.train), "n_heldout": len(m.heldout),
               "pairs_looked_at": m.looked_at, "programs_shared_by_train_and_heldout": 0,
               "resid_patch_iia": m.full_hits / m.full_n if m.full_n else None, "resid_patch_iia_ci_low": low,
               "resid_patch_iia_ci_high": high, "resid_patch_n": m.full_n,
               "das": {f"k{row['k']}": {"iia": row["iia"], "iia_ci_low": row["iia_ci_low"],
                                        "iia_ci_high": row["iia_ci_high"], "train_iia": row["train_iia"]}
                       for row in frame[frame["method"] == "das"].to_dict("records")}}
    if m.probe is not None:
        summary["probe"] = {**m.probe.summary(), "variable": settings.probe}
    elif m.probe_error:
        summary["probe"] = {"error": m.probe_error}
    return summary


SUBSPACE = Analysis("subspace", _compute, _write, _summarize,
                    outcome=lambda run, m, summary: SubspaceOutcome(m.frame, m.das, m.probe, m.layer, summary,
                                                                    run.tracker.out_dir),
                    check=_check_request, check_model=_check_model,
                    metadata=lambda run, m: {**run.settings.model_dump(mode="json"), "layer": m.layer})


def run_subspace(settings: SubspaceSettings, cache: ModelCache = MODEL_CACHE) -> SubspaceOutcome:
    return run_analysis(SUBSPACE, settings, cache)


def subspace_frame(result: DasResult, probe: PcaProbeResult | None, variable: str) -> pd.DataFrame:
    frame = result.to_frame().assign(method="das")
    if probe is not None:
        row = probe.summary()
        frame = pd.concat([frame, pd.DataFrame([{**{k: row[k] for k in ("layer", "k", "iia", "iia_ci_low", "iia_ci_high",
                                                                          "n_heldout", "n_train")},
                                                 "method": f"pca_probe_{variable}",
                                                 "probe_accuracy": row["probe_accuracy"]}])], ignore_index=True)
    return frame[["method", *[c for c in frame.columns if c != "method"]]]
