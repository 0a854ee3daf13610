"""Subspace run (job_type `subspace`): in which subspace of the residual stream, at one (layer, role)
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
from typing import Any

import numpy as np
import pandas as pd

from bindexp.errors import BindexpError, InputError
from bindexp.interventions.methods.das import DasResult, DasSettings, das
from bindexp.interventions.methods.exact import patch_cells
from bindexp.interventions.methods.probe import PcaProbeResult, ProbeSettings, pca_probe_subspace
from bindexp.interventions.engine.plan import GridPlan
from bindexp.interventions.methods.subspace import check_disjoint, site_pairs, split_pairs
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.runs.analysis import pairs_and_plan, prepare, save_figure, write_pairs, write_table
from bindexp.runs.analysis_settings import SubspaceSettings
from bindexp.io.folder import (DAS_CURVE_FILE, HELDOUT_PAIRS_FILE, PROBE_BASIS_FILE, ROTATIONS_FILE, SUBSPACE_FILE, TRAIN_PAIRS_FILE)
from bindexp.runs.patch import candidate_pairs, patch_shots
from bindexp.runs.tracking import Tracker
from bindexp.stats import wilson_interval

LABELS = {"value": (lambda program: int(program.answer), 10),
          "variable": (lambda program: ord(program.query_var) - ord("a"), 26)}


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
    if settings.probe == "variable" and settings.task != "binding":
        raise InputError("probe=variable reads a binding program's query variable")


def run_subspace(settings: SubspaceSettings, cache: ModelCache = MODEL_CACHE) -> SubspaceOutcome:
    _check_request(settings, patch_shots(settings))
    lm, shots = prepare(settings, cache)
    width = lm.model.config.get_text_config().hidden_size
    if max(settings.ks) > width:
        raise InputError(f"every k must lie in 1..{width} (the residual width), got {settings.ks}")
    if settings.layer is not None and not 0 <= settings.layer < lm.n_layers:
        raise InputError(f"layer must lie in 0..{lm.n_layers - 1}, got {settings.layer}")
    with Tracker(settings, "subspace") as tracker:
        tracker.update_config({"model_info": lm.describe()})
        pairs, looked_at, plan = pairs_and_plan(lm, settings, shots)
        label, n_classes = LABELS.get(settings.probe, (None, 0))
        train, heldout = split_pairs(site_pairs(plan.tokenized, settings.role, label), settings.n_heldout, settings.seed)
        check_disjoint(train, heldout)  # held-out pairs never train
        files = [write_pairs(tracker.folder.file(TRAIN_PAIRS_FILE), _subplan(plan, train).tokenized),
                 write_pairs(tracker.folder.file(HELDOUT_PAIRS_FILE), _subplan(plan, heldout).tokenized)]
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
        frame = subspace_frame(result, probe, settings.probe)
        metadata = {**settings.model_dump(mode="json"), "layer": layer}
        files.append(result.save_rotations(tracker.folder.file(ROTATIONS_FILE), {"role": settings.role}))
        if probe is not None:
            from safetensors.torch import save_file

            save_file({"basis": probe.basis.contiguous()}, str(tracker.folder.file(PROBE_BASIS_FILE)),
                      metadata={"layer": str(layer), "role": settings.role, "selected": str(probe.selected)})
            files.append(tracker.folder.file(PROBE_BASIS_FILE))
        files.append(write_table(tracker, "subspace", frame, SUBSPACE_FILE))
        tracker.log_steps("das_step", [{"das_step": step, **{f"loss_k{k}": float(result.losses[i, step])
                                                             for i, k in enumerate(result.ks)}}
                                       for step in range(result.losses.shape[1])], "das")
        files.append(save_figure(tracker, "das_loss", loss_figure(result, f"{lm.name}: DAS at layer {layer}, "
                                                                          f"{settings.role}"), DAS_CURVE_FILE))
        low, high = wilson_interval(full_hits, full_n)
        summary = {"layer": layer, "layer_chosen_by": "given" if settings.layer is not None else
                   "exact resid_pre patch at the role over the training pairs (best normalized effect)",
                   "role": settings.role, "n_train": len(train), "n_heldout": len(heldout), "pairs_looked_at": looked_at,
                   "programs_shared_by_train_and_heldout": 0,
                   "resid_patch_iia": full_hits / full_n if full_n else None, "resid_patch_iia_ci_low": low,
                   "resid_patch_iia_ci_high": high, "resid_patch_n": full_n,
                   "das": {f"k{row['k']}": {"iia": row["iia"], "iia_ci_low": row["iia_ci_low"],
                                            "iia_ci_high": row["iia_ci_high"], "train_iia": row["train_iia"]}
                           for row in frame[frame["method"] == "das"].to_dict("records")}}
        if probe is not None:
            summary["probe"] = {**probe.summary(), "variable": settings.probe}
        elif probe_error:
            summary["probe"] = {"error": probe_error}
        tracker.write_summary(summary)
        tracker.log_artifact("subspace", files, metadata, keep_folders=True)
        return SubspaceOutcome(frame, result, probe, layer, summary, tracker.out_dir)


def subspace_frame(result: DasResult, probe: PcaProbeResult | None, variable: str) -> pd.DataFrame:
    frame = result.to_frame().assign(method="das")
    if probe is not None:
        row = probe.summary()
        frame = pd.concat([frame, pd.DataFrame([{**{k: row[k] for k in ("layer", "k", "iia", "iia_ci_low", "iia_ci_high",
                                                                          "n_heldout", "n_train")},
                                                 "method": f"pca_probe_{variable}",
                                                 "probe_accuracy": row["probe_accuracy"]}])], ignore_index=True)
    return frame[["method", *[c for c in frame.columns if c != "method"]]]


def loss_figure(result: DasResult, title: str):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 3.4))
    ax = figure.subplots()
    for i, k in enumerate(result.ks):
        ax.plot(result.losses[i], label=f"k={k}")
    ax.set(xlabel="step", ylabel="training loss (candidate cross-entropy)", title=title)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure
