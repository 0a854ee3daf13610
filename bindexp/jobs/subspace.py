"""The subspace job (job_type `subspace`): in which subspace of the residual stream, at one (layer, role)
site, does the model carry the variable -- and what would a subspace that carries nothing score there?

    outcome = run_subspace(SubspaceSettings(model="smollm2-135m", hops=2, seq_len=6, ks=[1, 4, 16, 64]))
    outcome.frame            # method, k, seed, held-out IIA with its Wilson interval and n, shares ...
    outcome.das.rotations    # k -> R [d, d]; R[:k] spans the learned subspace

Pairs: the patch runner's (n_train + n_heldout of them), split by the seed into training and
held-out pairs that share no program (asserted before any training). The layer, unless given, is
the best layer of an exact resid_pre patch at `role` over the *training* pairs only.

Methods, every one scored by held-out IIA (Wilson interval, n) and by what it holds of the
held-out activations (its share of their variance and of E|x_cf - x|^2): DAS for each k, boundless
DAS (the size it settles on), the PCA + L1 probe, and the controls -- difference-PCA (the top-k
directions of the training pairs' x_cf - x, no learning), `random_seeds` random k-dim subspaces
(mean, min and max) and the whole residual (k = d) -- at every k of the learned subspaces.
Every learned subspace is saved (`subspaces.safetensors`, `bindexp.io.subspaces`); with
`subspace_from` a run applies saved subspaces instead of learning them (new pairs, other hops,
another checkpoint of the same width), beside the same controls.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator

from bindexp.errors import BindexpError, InputError
from bindexp.interventions.methods.boundless import BoundlessResult, BoundlessSettings, boundless_das
from bindexp.interventions.methods.controls import Basis, control_bases, random_summary, score_bases
from bindexp.interventions.methods.das import DasResult, DasSettings, das
from bindexp.interventions.methods.probe import PcaProbeResult, ProbeSettings, pca_probe_subspace
from bindexp.interventions.methods.subspace import (
    check_disjoint,
    site_activations,
    site_pairs,
    split_pairs,
    subspace_iia,
)
from bindexp.io.folder import (
    DAS_CURVE_FILE,
    HELDOUT_PAIRS_FILE,
    PROBE_BASIS_FILE,
    ROTATIONS_FILE,
    SUBSPACE_FIGURE_FILE,
    SUBSPACE_FILE,
    SUBSPACES_FILE,
    TRAIN_PAIRS_FILE,
)
from bindexp.io.subspaces import SavedSubspaces, read_subspaces, write_subspaces
from bindexp.io.tensors import write_bundle, write_tensors
from bindexp.jobs.subspace_site import best_layer, edited_token_note, resid_patch_hits, subplan
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.models.loading import LoadedModel
from bindexp.plots.analyses import loss_figure, subspace_figure
from bindexp.runs.analysis import Analysis, AnalysisRun, run_analysis
from bindexp.runs.pairs import candidate_pairs
from bindexp.runs.settings import PairSettings, positive_list
from bindexp.runs.tracking import resolve_wandb_mode
from bindexp.stats import wilson_interval
from bindexp.tasks.registry import get_task


class SubspaceSettings(PairSettings):
    """`scripts/subspace.py`: DAS (k in a list), boundless DAS and the PCA + L1 probe subspace at one
    (layer, role) site, beside their controls (difference-PCA, random subspaces, the whole residual),
    trained on n_train pairs and scored on n_heldout pairs that share no program with them."""

    layer: int | None = Field(None, description="resid_pre layer (None: the best layer of an exact resid_pre "
                                                "patch at `role` over the training pairs; with subspace_from: "
                                                "the saved layer)")
    role: str = Field("root_value", description="the token role of the site (with subspace_from, unless given: "
                                                "the saved role)")
    ks: list[int] = Field([1, 4, 16, 64], description="DAS subspace dimensions (the controls' too)")
    n_train: int = Field(64, ge=1)
    n_heldout: int = Field(20, ge=1)
    optimizer: Literal["adam"] = "adam"
    steps: int = Field(200, ge=0, description="DAS (and boundless DAS) optimizer steps per k")
    lr: float = Field(1e-2, gt=0)
    das_batch_size: int = Field(8, ge=1, description="training pairs per DAS step")
    probe: Literal["value", "variable", "none"] = Field(
        "value", description="PCA + L1 probe for the answer digit (value) or the query variable's letter "
                             "(variable: pair with counterfactual=query_chain, role=query_var), or none")
    probe_l1: float = Field(0.01, ge=0)
    probe_steps: int = Field(500, ge=1)
    probe_components: int | None = Field(None, ge=1, description="PCA components kept (None: all)")
    boundless: bool = Field(True, description="boundless DAS: a learned rotation and a learned size")
    boundary_lr: float = Field(1e-2, gt=0, description="boundless DAS: the boundary's learning rate")
    boundary_weight: float = Field(1.0, ge=0, description="boundless DAS: the loss's price per unit of the "
                                                          "boundary (the subspace's share of the width)")
    temperature_start: float = Field(50.0, gt=0, description="boundless DAS: the mask's first temperature "
                                                             "(coordinates), annealed geometrically to ...")
    temperature_end: float = Field(0.1, gt=0, description="boundless DAS: ... this one")
    random_seeds: int = Field(5, ge=0, description="random k-dim subspaces per k (the chance level and its range)")
    subspace_from: str | None = Field(None, description="apply saved subspaces instead of learning them: a "
                                                        "subspaces.safetensors file, a run folder holding one, or "
                                                        "(W&B online) an artifact name")

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
        if self.temperature_end > self.temperature_start:
            raise ValueError("temperature_end must not exceed temperature_start")
        return self


@dataclasses.dataclass
class SubspaceOutcome:
    frame: pd.DataFrame  # one row per method x k (x seed): held-out IIA with its interval and n, shares
    das: DasResult | None  # None when the subspaces came from a file
    probe: PcaProbeResult | None
    boundless: BoundlessResult | None
    layer: int
    summary: dict[str, Any]
    out_dir: Path


def _saved(settings: SubspaceSettings, run: AnalysisRun | None = None) -> SavedSubspaces | None:
    """The saved subspaces `subspace_from` names: a local file or folder, or (with a run) a W&B artifact."""
    source = settings.subspace_from
    if source is None:
        return None
    if Path(source).exists():
        return read_subspaces(source)
    if run is None:
        raise InputError(f"subspace_from={source}: no such file or folder")
    saved = read_subspaces(run.tracker.fetch_input_artifact(source, "subspace"))
    width = run.lm.model.config.get_text_config().hidden_size
    if saved.width != width:
        raise InputError(f"{source} holds subspaces of a {saved.width}-wide residual; {settings.model}'s is {width} wide")
    return saved


def _site(settings: SubspaceSettings, saved: SavedSubspaces | None) -> tuple[int | None, str]:
    """(layer, role): the settings', or the saved subspaces' where the settings leave them open."""
    if saved is None:
        return settings.layer, settings.role
    role = settings.role if "role" in settings.model_fields_set else saved.role
    return (settings.layer if settings.layer is not None else saved.layer), role


def _check_request(settings: SubspaceSettings, shots) -> None:
    saved = None
    if settings.subspace_from is not None:
        if Path(settings.subspace_from).exists():
            saved = read_subspaces(settings.subspace_from)
        elif resolve_wandb_mode(settings.wandb_mode) != "online":
            raise InputError(f"subspace_from={settings.subspace_from}: no such file or folder (an artifact name "
                             "needs W&B online)")
    program = candidate_pairs(settings, 1, shots)[0].original
    _, role = _site(settings, saved)
    if role not in program.spans:
        raise InputError(f"role {role!r} is not a token role of these programs ({', '.join(program.spans)})")
    labels = get_task(settings.task).probe_labels
    if settings.probe != "none" and settings.probe not in labels:
        raise InputError(f"probe={settings.probe} needs a label the {settings.task} task declares "
                         f"({', '.join(labels)})")


def _check_model(settings: SubspaceSettings, lm: LoadedModel) -> None:
    width = lm.model.config.get_text_config().hidden_size
    if settings.subspace_from is None and max(settings.ks) > width:
        raise InputError(f"every k must lie in 1..{width} (the residual width), got {settings.ks}")
    if settings.subspace_from is not None and Path(settings.subspace_from).exists():
        saved = read_subspaces(settings.subspace_from)
        if saved.width != width:
            raise InputError(f"{saved.path} holds subspaces of a {saved.width}-wide residual; {settings.model}'s is "
                             f"{width} wide")
    if settings.layer is not None and not 0 <= settings.layer < lm.n_layers:
        raise InputError(f"layer must lie in 0..{lm.n_layers - 1}, got {settings.layer}")


@dataclasses.dataclass
class _Measured:
    das: DasResult | None
    probe: PcaProbeResult | None
    probe_error: str | None
    boundless: BoundlessResult | None
    bases: list[Basis]  # the learned (or loaded) subspaces
    controls: list[Basis]  # difference-PCA and random subspaces
    frame: pd.DataFrame
    layer: int
    role: str
    width: int
    train: list
    heldout: list
    train_pairs: list  # the tokenized pairs behind `train` and `heldout`
    heldout_pairs: list
    full_hits: int
    full_n: int
    looked_at: int
    saved: SavedSubspaces | None


def _activations(lm: LoadedModel, layer: int, pairs, prefix) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(clean rows, counterfactual rows, the counterfactual's per-pair tensors) at the pairs' sites."""
    clean = site_activations(lm, layer, [p.ids for p in pairs], [p.positions for p in pairs], prefix=prefix)
    cf = site_activations(lm, layer, [p.cf_ids for p in pairs], [p.positions for p in pairs], prefix=prefix)
    return torch.cat(clean).float().cpu(), torch.cat(cf).float().cpu(), cf


def _learn(run: AnalysisRun, layer: int, train, heldout, prefix) -> tuple[list[Basis], DasResult, Any, Any, Any]:
    """DAS per k, the probe and boundless DAS, as bases already scored on the held-out pairs."""
    settings, lm = run.settings, run.lm
    result = das(lm, layer, train, heldout, settings.ks, DasSettings(
        steps=settings.steps, lr=settings.lr, batch_size=settings.das_batch_size, seed=settings.seed,
        optimizer=settings.optimizer), prefix=prefix)
    bases = [Basis("das", k, result.rotations[k][:k], accuracy=heldout_iia, extra={"train_iia": train_iia.value})
             for k, heldout_iia, train_iia in zip(result.ks, result.heldout, result.train)]
    probe, probe_error, bounded = None, None, None
    label, n_classes = get_task(settings.task).probe_labels.get(settings.probe, (None, 0))
    if label is not None:
        try:
            probe = pca_probe_subspace(lm, layer, train, heldout, n_classes, ProbeSettings(
                l1=settings.probe_l1, steps=settings.probe_steps, n_components=settings.probe_components), prefix=prefix)
            bases.append(Basis(f"pca_probe_{settings.probe}", len(probe.selected), probe.basis, accuracy=probe.heldout,
                               extra={"probe_accuracy": probe.probe_accuracy}))
        except BindexpError as err:
            probe_error = str(err)
    if settings.boundless and settings.steps > 0:
        bounded = boundless_das(lm, layer, train, heldout, BoundlessSettings(
            steps=settings.steps, lr=settings.lr, boundary_lr=settings.boundary_lr,
            boundary_weight=settings.boundary_weight, temperature_start=settings.temperature_start,
            temperature_end=settings.temperature_end, batch_size=settings.das_batch_size, seed=settings.seed),
            prefix=prefix)
        bases.append(Basis("boundless_das", bounded.size, bounded.basis, accuracy=bounded.heldout,
                           extra={"train_iia": bounded.train.value, "boundary": bounded.boundary}))
    return bases, result, probe, probe_error, bounded


def _compute(run: AnalysisRun) -> _Measured:
    settings, lm = run.settings, run.lm
    saved = _saved(settings, run)
    layer, role = _site(settings, saved)
    pairs, looked_at, plan = run.pairs_and_plan()
    label = get_task(settings.task).probe_labels.get(settings.probe, (None, 0))[0]
    train, heldout = split_pairs(site_pairs(plan.tokenized, role, label), settings.n_heldout, settings.seed)
    check_disjoint(train, heldout)  # held-out pairs never train
    if layer is None:
        layer = best_layer(subplan(plan, train), role, settings.batch_size)
    full_hits, full_n = resid_patch_hits(subplan(plan, heldout), role, layer, settings.batch_size)
    train_clean, train_cf, _ = _activations(lm, layer, train, plan.prefix)
    held_clean, held_cf, held_cf_acts = _activations(lm, layer, heldout, plan.prefix)
    width = train_clean.shape[-1]
    result = probe = probe_error = bounded = None
    if saved is not None:
        bases = [Basis(saved.methods[name], int(rows.shape[0]), rows, extra={"name": name, "source": "loaded"})
                 for name, rows in saved.bases.items() if saved.methods[name] != "diff_pca"]  # controls: from this run
    else:
        bases, result, probe, probe_error, bounded = _learn(run, layer, train, heldout, plan.prefix)

    def scorer(rows: torch.Tensor):
        return subspace_iia(lm, layer, heldout, held_cf_acts, rows, prefix=plan.prefix, batch_size=settings.das_batch_size)

    ks = sorted({*(settings.ks if saved is None else []), *(b.k for b in bases)} - {0})
    controls = control_bases(train_clean, train_cf, [k for k in ks if k <= width],
                             [settings.seed * 1000 + i for i in range(settings.random_seeds)])
    rows = score_bases([*bases, *controls], scorer, held_clean, held_cf)
    low, high = wilson_interval(full_hits, full_n)
    rows.append({"method": "whole_residual", "k": width, "seed": None, "iia": full_hits / full_n if full_n else None,
                 "iia_ci_low": low, "iia_ci_high": high, "successes": full_hits, "n_heldout": full_n,
                 "variance_share": 1.0, "difference_share": 1.0})
    frame = pd.DataFrame(rows).assign(layer=layer)
    return _Measured(result, probe, probe_error, bounded, bases, controls, frame, layer, role, width, train, heldout,
                     subplan(plan, train).tokenized, subplan(plan, heldout).tokenized, full_hits, full_n, looked_at,
                     saved)


def _write(run: AnalysisRun, m: _Measured) -> list[Path]:
    settings, folder = run.settings, run.tracker.folder
    files = [run.write_pairs(TRAIN_PAIRS_FILE, m.train_pairs), run.write_pairs(HELDOUT_PAIRS_FILE, m.heldout_pairs)]
    saving = {} if m.saved is not None else {
        (f"{b.method}_k{b.k}" if b.method in ("das", "diff_pca") else b.method): (b.method, b.rows)
        for b in [*m.bases, *(c for c in m.controls if c.method == "diff_pca")]}
    if saving:
        source = {key: settings.model_dump(mode="json").get(key) for key in ("model", "task", "counterfactual", "hops",
                                                                             "seq_len", "seed", "n_train")}
        files.append(write_subspaces(folder.file(SUBSPACES_FILE), saving, width=m.width, layer=m.layer, role=m.role,
                                     source=source))
    if m.das is not None:
        files.append(write_bundle(folder.file(ROTATIONS_FILE), *m.das.rotation_bundle({"role": m.role})))
    if m.probe is not None:
        files.append(write_tensors(folder.file(PROBE_BASIS_FILE), {"basis": m.probe.basis.contiguous()},
                                   {"layer": str(m.layer), "role": m.role, "selected": str(m.probe.selected)}))
    files.append(run.write_table("subspace", m.frame, SUBSPACE_FILE))
    title = f"{run.lm.name}: held-out IIA at layer {m.layer}, {m.role} ({len(m.heldout)} pairs)"
    files.append(run.write_figure("subspace_iia", subspace_figure(m.frame, title), SUBSPACE_FIGURE_FILE))
    if m.das is not None:
        result = m.das
        steps = [{"das_step": step, **{f"loss_k{k}": float(result.losses[i, step]) for i, k in enumerate(result.ks)}}
                 for step in range(result.losses.shape[1])]
        if m.boundless is not None:
            for step, row in enumerate(steps):
                row.update({"loss_boundless": float(m.boundless.losses[step]),
                            "boundless_size": float(m.boundless.boundaries[step]) * m.width})
        run.tracker.log_steps("das_step", steps, "das")
        files.append(run.write_figure("das_loss", loss_figure(result, f"{run.lm.name}: DAS at layer {m.layer}, "
                                                                      f"{m.role}", m.boundless), DAS_CURVE_FILE))
    return files


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("k", "iia", "iia_ci_low", "iia_ci_high", "n_heldout", "variance_share", "difference_share", "train_iia",
            "probe_accuracy", "boundary", "name", "source")
    return {key: row[key] for key in keys
            if row.get(key) is not None and not (isinstance(row[key], float) and row[key] != row[key])}


def _summarize(run: AnalysisRun, m: _Measured) -> dict[str, Any]:
    settings = run.settings
    rows = m.frame.astype(object).where(m.frame.notna(), None).to_dict("records")
    low, high = wilson_interval(m.full_hits, m.full_n)
    summary: dict[str, Any] = {
        "layer": m.layer, "role": m.role, "width": m.width,
        "layer_chosen_by": ("given" if settings.layer is not None else "the saved subspaces" if m.saved is not None else
                            "exact resid_pre patch at the role over the training pairs (best normalized effect)"),
        "n_train": len(m.train), "n_heldout": len(m.heldout), "pairs_looked_at": m.looked_at,
        "programs_shared_by_train_and_heldout": 0,
        "resid_patch_iia": m.full_hits / m.full_n if m.full_n else None, "resid_patch_iia_ci_low": low,
        "resid_patch_iia_ci_high": high, "resid_patch_n": m.full_n,
        **edited_token_note(m.heldout_pairs, m.role, m.full_hits, m.full_n)}
    for row in rows:
        if row["method"] in ("das", "diff_pca"):
            summary.setdefault(row["method"], {})[f"k{row['k']}"] = _entry(row)
        elif row["method"] not in ("random", "whole_residual"):  # boundless_das, the probe, a loaded subspace
            summary[row.get("name") or row["method"]] = _entry(row)
    summary["random"] = {f"k{k}": entry for k, entry in random_summary(rows).items()}
    summary["whole_residual"] = _entry(next(r for r in rows if r["method"] == "whole_residual"))
    if m.probe is not None:
        shares = summary.pop(f"pca_probe_{settings.probe}", {})
        summary["probe"] = {**m.probe.summary(), "variable": settings.probe,
                            **{k: v for k, v in shares.items() if k.endswith("_share")}}
    elif m.probe_error:
        summary["probe"] = {"error": m.probe_error}
    if m.boundless is not None:
        summary["boundless_das"] = {**summary.get("boundless_das", {}), "size": m.boundless.size,
                                    "boundary": m.boundless.boundary}
    if m.saved is not None:
        summary["subspace_from"] = {"path": str(m.saved.path), "saved_layer": m.saved.layer, "saved_role": m.saved.role,
                                    "source": m.saved.source}
    return summary


SUBSPACE = Analysis("subspace", _compute, _write, _summarize,
                    outcome=lambda run, m, summary: SubspaceOutcome(m.frame, m.das, m.probe, m.boundless, m.layer,
                                                                    summary, run.tracker.out_dir),
                    check=_check_request, check_model=_check_model,
                    metadata=lambda run, m: {**run.settings.model_dump(mode="json"), "layer": m.layer})


def run_subspace(settings: SubspaceSettings, cache: ModelCache = MODEL_CACHE) -> SubspaceOutcome:
    return run_analysis(SUBSPACE, settings, cache)
