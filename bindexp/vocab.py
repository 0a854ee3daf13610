"""The words settings, runners and models share, each defined once. No torch, no bindexp imports.

Each vocabulary is a `Literal` type (what pydantic settings validate against) and the tuple of
its values (what code loops over and error messages list), the tuple derived from the type.
"""

from __future__ import annotations

from typing import Literal, get_args

Site = Literal["resid_pre", "resid_post", "attn_out", "mlp_out", "head", "q", "k", "v", "conv_out"]
SITES: tuple[str, ...] = get_args(Site)  # intervention sites, mapped per family in bindexp.models.sites
HEAD_SITES: tuple[str, ...] = ("head", "q", "k", "v")  # sites sliced per head (a grid gets a head axis)

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = get_args(Dtype)

Quantization = Literal["4bit", "8bit"]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)

WandbMode = Literal["online", "offline", "disabled"]
WANDB_MODES: tuple[str, ...] = get_args(WandbMode)

Scoring = Literal["auto", "candidates", "generate"]
SCORINGS: tuple[str, ...] = get_args(Scoring)

GridColumns = Literal["roles", "all"]  # a patch grid's columns: token roles or every program token
GRID_COLUMNS: tuple[str, ...] = get_args(GridColumns)
NOT_RUN = "not_run"  # grid.counts key: pairs for which a cell was not run (known equal to clean)
NOISE_FLOOR = "noise_floor"  # exact grids' metric: the run's own rounding floor, in normalized-effect units

DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))  # candidate answers of digit-valued tasks

# The x-axis of every history row of a training run (the W&B `define_metric` step), also the step
# axis of analyses over its checkpoints.
STEP_KEY = "train/step"

# A training run's phase boundaries (first evaluation steps), in the order they are passed; see
# `bindexp.training.evaluation.phase_boundaries`.
PHASE_KEYS = ("heuristic_step", "past_heuristic_step", "systematic_step")
