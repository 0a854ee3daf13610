"""Settings of the analysis runs (attention, lens, subspace, locate): each a `PatchSettings`, so pairs
are drawn and selected exactly as for a patch run (task, hops, seq_len, shots, counterfactual,
only_correct, systematic_only, num_programs ...), plus what the analysis itself needs.

Analyses default to systematic programs (`systematic_only=True`: the line-1/2 heuristic gets them
wrong) answered correctly on both sides of each pair (`only_correct=True`). Torch-free.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bindexp.runs.settings import PatchSettings, StrList


def _none_strings(value):
    return None if value in ("None", [None], ["None"]) else value


class AnalysisSettings(PatchSettings):
    """What the four analyses share."""

    systematic_only: bool = Field(True, description="keep only programs the line-1/2 heuristic gets wrong")


class AttentionSettings(AnalysisSettings):
    """`scripts/attention.py`: mean attention per layer x head from destination tokens to each role,
    the routing heads, confirmed by patching their output (the exact method's `head` site) and by
    knocking out their attention edge."""

    destinations: StrList = Field(["final", "query_var"], description="tokens whose attention is read")
    routing_sources: StrList | None = Field(None, description="roles the routing table ranks heads for "
                                                              "(None: the chain's roles, one per hop)")
    top_k: int = Field(5, ge=1, description="routing heads per (destination, source)")
    confirm: Literal["head", "knockout", "both", "none"] = Field(
        "both", description="head: patch each routing head's output at its destination with the "
                            "counterfactual's; knockout: block that head's edge destination -> source")

    @field_validator("routing_sources", mode="before")
    @classmethod
    def _none(cls, value):
        return _none_strings(value)

    @field_validator("destinations")
    @classmethod
    def _some_destination(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one destination role")
        return value


class LensSettings(AnalysisSettings):
    """`scripts/lens.py`: the logit lens per layer x role for the answer and the counterfactual answer."""

    readable_threshold: float = Field(0.5, gt=0, lt=1, description="the answer is readable at a layer when "
                                                                   "it is top-1 in more than this share of programs")


class SubspaceSettings(AnalysisSettings):
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
        if not ks or min(ks) < 1:
            raise ValueError(f"ks must be positive subspace dimensions, got {ks}")
        return ks

    @model_validator(mode="after")
    def _pairs_from_the_split(self) -> "SubspaceSettings":
        wanted = self.n_train + self.n_heldout
        if "num_programs" in self.model_fields_set and self.num_programs != wanted:
            raise ValueError("a subspace run draws n_train + n_heldout pairs: set those, not num_programs")
        self.__dict__["num_programs"] = wanted
        return self


class LocateSettings(AnalysisSettings):
    """`scripts/locate.py`: for each variable of the task's declared causal model, the (layer, role)
    cells where interchanging it (its counterfactual kind, exact patching at `site`) moves the
    output as the model predicts, with IIA and its Wilson interval."""

    counterfactuals: StrList | None = Field(None, description="kinds to run (None: every kind the causal model "
                                                              "maps to a variable that these settings allow)")
    iia_threshold: float = Field(0.5, gt=0, le=1, description="a cell locates a variable when its IIA reaches this")

    @field_validator("counterfactuals", mode="before")
    @classmethod
    def _none(cls, value):
        return _none_strings(value)

    @model_validator(mode="after")
    def _exact_role_grids(self) -> "LocateSettings":
        if self.method != "exact" or self.site == "head" or self.positions != "roles":
            raise ValueError("locate patches exact role grids: method=exact, positions=roles, a site other than head")
        return self

