"""Settings groups: each job's settings class is composed from the groups it uses (and its own
fields), so a job carries only what it reads.

- `DeviceGroup`: device, dtype. `ModelGroup`: the model to load and how (`model_kwargs()`).
- `RunGroup`: seed, batch size, progress bars. `WandbGroup`: where the run goes (W&B, local folder).
- `ProgramGroup`: how programs and prompts are drawn (task, shots, template, task options).
- `ConditionsGroup`: the (hops x seq_len) conditions of an eval-like run and how it scores.
- `PairsGroup`: how counterfactual pairs are drawn and selected (patch and the analyses).
- `PatchMethodGroup`: a patch grid's site, method, columns and the method's options.
- `RunSettings` (model + run + W&B) and `PairSettings` (RunSettings + pairs): the usual compositions.

Parsed from `--key=value` arguments exactly as `wandb agent` passes them (`--seq_len=16`,
`--shots=None`, `--rebinding=True`, `--hops=[1, 2]`), and from `BINDEXP_*` environment
variables; logged whole to W&B with `model_dump(mode="json")`. Torch-free.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict, SettingsError

from bindexp.errors import BindexpError
from bindexp.interventions.methods import METHOD_NAMES
from bindexp.runs.naming import check_run_name
from bindexp.tasks import DEFAULT_TASK, MAX_HOPS
from bindexp.tasks.registry import get_task, patchable_tasks
from bindexp.vocab import Dtype, GridColumns, Quantization, Scoring, Site, WandbMode


def _plain_strings(value: Any) -> Any:
    """wandb formats a list of strings as `['a', 'b']`; take the quotes off each item."""
    if isinstance(value, str) and value.startswith("["):
        value = ast.literal_eval(value) if "'" in value or '"' in value else value[1:-1].split(",")
    if isinstance(value, (list, tuple)):
        return [str(v).strip().strip("'\"") for v in value]
    return value


def none_list(value: Any) -> Any:
    """`--layers=None` reaches a list field as [None]: it means no list at all."""
    return None if value in ("None", [None], ["None"]) else value


def positive_list(values: list[int], message: str) -> list[int]:
    """`values` if there are some and all are at least 1, else ValueError(`message`, the values)."""
    if not values or min(values) < 1:
        raise ValueError(f"{message}, got {values}")
    return values


StrList = Annotated[list[str], BeforeValidator(_plain_strings)]
OptionalIntList = Annotated[list[int] | None, BeforeValidator(none_list)]
OptionalStrList = Annotated[list[str] | None, BeforeValidator(lambda value: _plain_strings(none_list(value)))]


class Settings(BaseSettings):
    """The parsing rules every settings class shares."""

    model_config = SettingsConfigDict(
        env_prefix="BINDEXP_",
        cli_parse_none_str="None",
        cli_exit_on_error=False,
        extra="forbid",
        validate_default=True,
        cli_hide_none_type=True,  # `--help` shows {online,offline,disabled}, not {{online,offline,disabled},None}
    )


class DeviceGroup(Settings):
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ...")
    dtype: Dtype = "auto"

    @field_validator("device")
    @classmethod
    def _device_is_a_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got {device!r}")
        return device


class ModelGroup(DeviceGroup):
    """The model a run loads."""

    model: str = Field("smollm2-135m", description="bundled name, local dir, .gguf file or hub id")
    revision: str | None = Field(None, description="hub branch, tag or commit")
    quantization: Quantization | None = None
    trust_remote_code: bool = False
    model_seed: int = Field(0, description="weights of the tiny-random-* test models")

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `bindexp.models.load_model`."""
        return {
            "device": self.device,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "revision": self.revision,
            "trust_remote_code": self.trust_remote_code,
            "seed": self.model_seed,
        }


class RunGroup(Settings):
    seed: int = Field(0, description="programs, counterfactuals and sampling")
    batch_size: int = Field(16, ge=1)
    progress: bool = True


class WandbGroup(Settings):
    """Where a run goes: W&B (online, offline, none) and the local folder."""

    wandb_mode: WandbMode | None = Field(None, description="None: online if an API key is set, else offline")
    project: str = "bindexp"
    entity: str | None = None
    group: str | None = None
    tags: StrList = []
    run_name: str | None = Field(None, description="None: named from the settings, e.g. 'eval smollm2-135m binding h1-4 L16 s0'")
    sweep: str | None = Field(None, description="the local sweep this run belongs to (set by scripts/sweep_local.py)")
    output_dir: str = Field("outputs", description="local results when W&B is disabled or fails")

    @field_validator("run_name")
    @classmethod
    def _run_name_is_a_name(cls, name: str | None) -> str | None:
        return check_run_name(name)


class RunSettings(RunGroup, WandbGroup, ModelGroup):
    """What a run of a loaded model shares: the model, the seed, and where results go."""


TASK_OPTION_FIELDS = frozenset({"hops", "distractor_chains", "max_distractor_depth", "rebinding", "spacing"})


class ProgramGroup(Settings):
    """How programs and prompts are drawn."""

    task: str = DEFAULT_TASK
    shots: int | None = Field(0, ge=0, description="worked examples before each program (None: 0)")
    template: str = "raw"
    systematic_only: bool = Field(False, description="keep only programs the line-1/2 heuristic gets wrong")
    distractor_chains: int | None = None
    max_distractor_depth: int = 3
    rebinding: bool = False
    spacing: Literal["spaced", "compact"] = "spaced"

    @property
    def n_shots(self) -> int:
        return self.shots or 0

    def task_options(self) -> dict[str, Any]:
        """The task's options that are settings here, without its condition axes (e.g. hops)."""
        spec = get_task(self.task)
        return {name: getattr(self, name) for name in spec.option_names()
                if name not in spec.axes and name in type(self).model_fields}

    @model_validator(mode="after")
    def _no_option_the_task_ignores(self) -> ProgramGroup:
        """A task option given explicitly (--hops, --rebinding, --spacing ...) that the task does not
        take would be recorded and ignored: refused instead."""
        spec = get_task(self.task)
        unused = sorted(name for name in TASK_OPTION_FIELDS & self.model_fields_set
                        if name not in spec.option_names() and name not in spec.axes)
        if unused:
            raise ValueError(f"task {self.task!r} does not use {', '.join(unused)} (it takes "
                             f"{', '.join(spec.option_names()) or 'no options'}): leave {unused[0]} out")
        return self


class ConditionsGroup(ProgramGroup):
    """The (hops x seq_len) conditions an eval-like run scores, and how."""

    hops: list[int] = Field([1], description="binding hops; one run may cover several")
    seq_len: list[int] = Field([16], description="program lengths; one run may cover several")
    num_programs: int = Field(100, ge=1, description="programs per (hops, seq_len) condition")
    chat: bool = Field(False, description="wrap the prompt in the tokenizer's chat template")
    scoring: Scoring = "auto"
    max_new_tokens: int = Field(8, ge=1)

    @field_validator("hops")
    @classmethod
    def _hops_in_range(cls, hops: list[int]) -> list[int]:
        bad = [h for h in hops if not 1 <= h <= MAX_HOPS]
        if bad or not hops:
            raise ValueError(f"hops must be between 1 and {MAX_HOPS}, got {hops}")
        return hops

    @field_validator("seq_len")
    @classmethod
    def _lengths_positive(cls, lengths: list[int]) -> list[int]:
        return positive_list(lengths, "seq_len must be at least 1")


MIN_GAP = 1.0  # logits: a pair's rounding error in LD reaches its normalized effect divided by the gap


class PairsGroup(ProgramGroup):
    """How counterfactual pairs are drawn and selected (a patch run's, and every analysis's)."""

    task: str = Field(DEFAULT_TASK, description="a task that declares counterfactuals: " + ", ".join(patchable_tasks()))
    hops: int = Field(1, ge=1, le=MAX_HOPS, description="for tasks with a hops axis (binding)")
    seq_len: int = Field(16, ge=1)
    num_programs: int = Field(20, ge=1, description="pairs to patch (after filtering)")
    shots: int | None = Field(3, ge=0)
    counterfactual: str = Field("root_value", description="a counterfactual kind the task declares")
    only_correct: bool = Field(True, description="keep pairs the model answers right on both sides")
    programs_file: str | None = Field(None, description="originals from scripts/find_robust.py instead of new draws")
    systematic_only: bool = Field(True, description="keep only programs the line-1/2 heuristic gets wrong "
                                  "(default True for patching: heuristic-solvable pairs say little about binding)")
    min_gap: float = Field(MIN_GAP, ge=0, description=f"leave out pairs whose clean-to-counterfactual logit gap "
                           f"|LD_cf - LD_clean| is below this (default {MIN_GAP} logit; 0 keeps all; controls: not applied)")

    @field_validator("task")
    @classmethod
    def _task_is_patchable(cls, task: str) -> str:
        if task not in patchable_tasks():
            raise ValueError(f"task {task!r} cannot be patched; tasks with counterfactuals: {', '.join(patchable_tasks())}")
        return task

    @model_validator(mode="after")
    def _counterfactual_of_the_task(self) -> PairsGroup:
        kinds = get_task(self.task).counterfactuals
        if self.counterfactual not in kinds:
            raise ValueError(f"unknown counterfactual {self.counterfactual!r} for task {self.task!r}; "
                             f"known: {', '.join(kinds)}")
        return self


class PairSettings(PairsGroup, RunSettings):
    """A run of a loaded model on counterfactual pairs (the analyses' common ground)."""


class PatchMethodGroup(Settings):
    """A patch grid: where it writes, by which method, its columns and the method's options."""

    site: Site = "resid_pre"
    method: Literal[METHOD_NAMES] = "exact"  # type: ignore[valid-type]
    positions: GridColumns = Field("roles", description="grid columns: token roles or every program token")
    pairs_per_chunk: int = Field(8, ge=1, description="pairs held in memory at once")
    layers: OptionalIntList = Field(None, description="None: every layer")
    noise_floor_pairs: int = Field(4, ge=0, description="exact: pairs whose cells are re-patched with the clean run's "
                                   "own values to measure the noise floor (0: none)")
    verify_top_k: int = Field(0, ge=0, description="atp: check the k largest cells by exact patching")
    verify: Literal["top_k", "full"] = Field("top_k", description="atp: full computes the exact grid of every cell "
                                             "too (precision/recall@k, sign agreement, full-grid Spearman)")
    knockout_destination: Literal["final", "query_var"] = Field("final", description="knockout: the attending token")
    knockout_window: int = Field(1, ge=1, description="knockout: consecutive layers blocked together")


S = TypeVar("S", bound=BaseSettings)


class SettingsParseError(BindexpError):
    """Bad command-line arguments, as one line."""


def parse_settings(cls: type[S], argv: Sequence[str] | None) -> S:
    """Parse `argv` (default: sys.argv[1:]) into `cls`; raise SettingsParseError with one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return CliApp.run(cls, cli_args=args)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise SettingsParseError(f"{where}: {first['msg']}") from None
    except SettingsError as err:
        raise SettingsParseError(str(err).splitlines()[0].removeprefix("error parsing CLI: ")) from None
