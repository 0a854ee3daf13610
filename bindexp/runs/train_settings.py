"""Settings of a training run (`scripts/train.py`), with the `paper` and `cpu` presets.

A preset fills every setting it names unless the command line (or a BINDEXP_* variable) gives
that setting explicitly: `--preset=cpu --steps=500` is the cpu preset with 500 steps.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bindexp.runs.settings import RunSettings
from bindexp.tasks import MAX_HOPS

PRESETS: dict[str, dict[str, Any]] = {
    # arXiv 2505.20896: 12 layers, 8 heads of 64, d 512, RoPE, 17-line programs (16 assignments +
    # query), batch 64, ~105k steps (15 epochs of 450k programs), warmup + linear decay, dropout 0.1.
    # Approximated Llama-style (RoPE, RMSNorm, gated GELU MLP); d_ff 1365 keeps the paper's
    # 37.8M parameters with a gated MLP. The paper gives no learning rate; 3e-4 is ours.
    "paper": dict(
        model="llama", n_layers=12, n_heads=8, d_model=512, d_ff=1365, activation="gelu", dropout=0.1,
        seq_len=16, hops=[1, 2, 3, 4], spacing="spaced", train_programs=450_000, heldout_fraction=0.1,
        batch_size=64, steps=105_400, lr=3e-4, warmup_steps=1_000, weight_decay=0.01,
        n_eval=1_000, eval_every=1_000, checkpoint_every=5_000, longer_seq_len=[20, 24], loss_on="answer",
    ),
    # For a 2-core CPU, the recipe that solves 8-line programs (docs/RESULTS.md): a 4-layer, d 64
    # Llama-style model with a width-4 causal convolution before each attention block, 4 supervised
    # queries per training program and a target at the end of every line; AdamW without weight
    # decay, constant learning rate after warmup, linear decay over the last 2,000 steps.
    "cpu": dict(
        model="llama", n_layers=4, n_heads=4, d_model=64, d_ff=128, activation="gelu", dropout=0.0, conv_kernel=4,
        seq_len=8, hops=[1, 2, 3, 4], spacing="compact", train_programs=None, heldout_fraction=0.1,
        queries_per_program=4, line_targets=True, relabel=False,
        batch_size=32, steps=8_000, lr=3e-3, warmup_steps=200, decay_steps=2_000, weight_decay=0.0, beta2=0.98,
        n_eval=256, n_systematic_test=1_600, eval_every=250, checkpoint_every=500, longer_seq_len=[12],
        loss_on="answer",
    ),
    # The earlier cpu preset (4 layers, d 128, answer loss only, no convolution). Measured
    # (docs/RESULTS.md): one hour (17k steps) stays in the heuristic phase (test 0.41).
    "cpu_plain": dict(
        model="llama", n_layers=4, n_heads=4, d_model=128, d_ff=512, activation="gelu", dropout=0.0,
        seq_len=8, hops=[1, 2, 3, 4], spacing="compact", train_programs=None, heldout_fraction=0.1,
        batch_size=64, steps=10_000, lr=1e-3, warmup_steps=300, weight_decay=0.01,
        n_eval=256, eval_every=250, checkpoint_every=1_000, longer_seq_len=[12], loss_on="answer",
    ),
}

# Settings that may differ between a killed run and its resumption (they do not change training).
RESUME_FREE = frozenset({
    "resume", "stop_after", "checkpoint_dir", "wandb_mode", "project", "entity", "group", "tags", "run_name",
    "output_dir", "progress", "log_artifacts", "keep_checkpoints", "device", "eval_every", "eval_batch_size",
    "log_every", "preset", "stop_when_systematic",
})


class TrainSettings(RunSettings):
    """`scripts/train.py`: train a transformer from scratch on binding programs."""

    preset: Literal["paper", "cpu", "cpu_plain"] | None = Field(None, description="fills the settings not given explicitly")

    # architecture (`model` names the family: the trained model is a new model of that family)
    model: Literal["llama", "gpt2"] = Field(
        "llama", description="llama: RoPE, RMSNorm, gated MLP; gpt2: learned positions, LayerNorm, GELU")
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    d_model: int = Field(128, ge=1)
    d_ff: int = Field(512, ge=1)
    activation: Literal["gelu", "silu"] = "gelu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    max_positions: int = Field(512, ge=8, description="longest token sequence the model accepts")
    conv_kernel: int = Field(0, ge=0, le=64, description=(
        "llama only: width of a causal depthwise convolution before each attention block (0: none, plain Llama)"))
    model_seed: int = Field(0, description="unused by training: initial weights come from `seed`")
    init_from: str | None = Field(None, description=(
        "start from this checkpoint folder's weights (same architecture; a fresh optimizer and schedule), "
        "e.g. to fine-tune a trained model on another supervision"))

    # data
    seq_len: int = Field(8, ge=1, description="assignment lines per training program (plus the query line)")
    hops: list[int] = Field([1, 2, 3, 4], description="chain lengths trained on, balanced")
    distractor_chains: int | None = None
    max_distractor_depth: int = Field(3, ge=1)
    spacing: Literal["spaced", "compact"] = "compact"
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="(letter, digit) pairs never assigned in training")
    train_programs: int | None = Field(None, ge=1, description="finite pool visited once per epoch; None: fresh programs")
    data_seed: int = Field(0, description="programs, held-out pairs and evaluation sets")
    n_eval: int = Field(256, ge=1, description="programs in each evaluation set")
    longer_seq_len: list[int] = Field([], description="generalisation sets of longer programs")
    loss_on: Literal["answer", "all"] = Field(
        "answer", description="answer: loss on the supervised targets (the answer digit and what the supervision adds); "
                              "all: on every token")
    queries_per_program: int = Field(1, ge=1, le=26, description=(
        "supervised queries per training program: its own, then N-1 about other variables (`#x: d` lines)"))
    line_targets: bool = Field(False, description="also predict each line's value at the newline that ends it")
    relabel: bool = Field(False, description="rename letters and digits by a random permutation per training program")
    n_systematic_test: int = Field(0, ge=0, description=(
        "an extra test set of heuristic-wrong programs (hops balanced), scored at the end as `systematic/`"))

    # optimisation
    seed: int = Field(0, description="initial weights, dropout")
    batch_size: int = Field(64, ge=1)
    steps: int = Field(1000, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    warmup_steps: int = Field(100, ge=0)
    decay_steps: int | None = Field(None, ge=1, description=(
        "linear decay to 0 over the last N steps, constant before (None: decay over every step after warmup)"))
    weight_decay: float = Field(0.01, ge=0.0)
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float | None = Field(1.0, gt=0.0)

    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")

    # evaluation, checkpoints, resumption
    eval_every: int = Field(100, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept on disk (the best is always kept)")
    checkpoint_dir: str | None = Field(
        None, description="None: <output_dir>/checkpoints/<run>; {name} placeholders take settings, e.g. ckpt/seed{seed}")
    resume: bool = Field(False, description="continue from the latest checkpoint in checkpoint_dir, if any")
    stop_when_systematic: bool = Field(False, description=(
        "end (with a checkpoint) at the first evaluation whose validation heuristic-wrong accuracy passes 0.99"))
    stop_after: int | None = Field(None, ge=1, description="end after this many steps without saving (simulates a kill)")
    log_artifacts: bool = Field(True, description="checkpoints as W&B model artifacts (latest, best, step-N)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("preset")
        if name in (None, "None"):
            return data
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
        return {**PRESETS[name], **data}

    @field_validator("hops")
    @classmethod
    def _hops_in_range(cls, hops: list[int]) -> list[int]:
        if not hops or any(not 1 <= h <= MAX_HOPS for h in hops) or len(set(hops)) != len(hops):
            raise ValueError(f"hops must be distinct values between 1 and {MAX_HOPS}, got {hops}")
        return hops

    @model_validator(mode="after")
    def _consistent(self) -> "TrainSettings":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.quantization is not None:
            raise ValueError("training does not quantize; leave quantization unset")
        if self.conv_kernel and self.model != "llama":
            raise ValueError(f"conv_kernel needs model=llama (got {self.model})")
        if self.line_targets and self.loss_on == "all":
            raise ValueError("line_targets need loss_on=answer: with loss_on=all the newline already predicts the next line")
        if self.dtype == "float16":
            raise ValueError("float16 training needs loss scaling; use dtype=bfloat16 or float32")
        if self.checkpoint_dir is not None:
            try:
                self.checkpoint_path()
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(f"checkpoint_dir {self.checkpoint_dir!r} names an unknown setting: {err}") from None
        return self

    def checkpoint_path(self) -> str | None:
        """checkpoint_dir with its `{setting}` placeholders filled in (None when unset)."""
        if self.checkpoint_dir is None:
            return None
        return self.checkpoint_dir.format(**{k: v for k, v in self.__dict__.items() if k != "checkpoint_dir"})

    def training_values(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in RESUME_FREE}
