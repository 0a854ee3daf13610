"""Checkpoints: a Hugging Face model directory plus the trainer's state, with no pickle.

    <root>/step-000200/             config.json, model.safetensors, tokenizer.json ... (load_model reads it)
    <root>/step-000200/trainer/     optimizer.safetensors, rng.safetensors, state.json
    <root>/checkpoints.json         {"latest": "step-000200", "best": "step-000100", ...}

Tensors go to safetensors, everything else to JSON. A checkpoint is written to a staging folder and
renamed into place, and `checkpoints.json` is replaced atomically, so a run killed while saving
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bindexp.errors import ModelError

INDEX_FILE = "checkpoints.json"
TRAINER_DIR = "trainer"


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def _write_json(path: Path, data: Any) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(data, indent=2))
    os.replace(staging, path)


def read_index(root: Path) -> dict[str, Any]:
    path = Path(root) / INDEX_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    latest = read_index(root).get("latest")
    return Path(root) / latest if latest else None


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The optimizer's per-parameter state as flat tensors, and its param groups (JSON-able)."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value.detach().cpu().contiguous()
               for index, entries in state["state"].items() for key, value in entries.items()}
    return tensors, state["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{index}"] = value
    return tensors


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[f"cuda{i}"] for i in range(len(tensors) - 1) if f"cuda{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(root: Path, step: int, model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict[str, Any]) -> Path:
    """Write checkpoint `step` under `root` and return its folder (not yet in the index)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / step_name(step)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".staging-{step_name(step)}-"))
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one "Writing model shards" bar per checkpoint is noise
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        trainer = staging / TRAINER_DIR
        trainer.mkdir()
        tensors, groups = optimizer_tensors(optimizer)
        save_file(tensors, str(trainer / "optimizer.safetensors"))
        save_file(rng_tensors(), str(trainer / "rng.safetensors"))
        scheduler_state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        (trainer / "state.json").write_text(json.dumps(
            {**state, "step": step, "optimizer_param_groups": groups, "scheduler": scheduler_state}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return target


def record_checkpoint(root: Path, step: int, *, best: bool, metric: float | None, keep: int) -> list[str]:
    """Make checkpoint `step` the latest (and the best, if `best`) and delete all but the newest
    `keep` and the best. Returns the names deleted."""
    index = read_index(root)
    name = step_name(step)
    steps = [s for s in index.get("steps", []) if s != name] + [name]
    index.update(latest=name, steps=steps)
    if best:
        index.update(best=name, best_metric=metric)
    kept = set(steps[-keep:]) | {index.get("best")}
    removed = [s for s in steps if s not in kept]
    index["steps"] = [s for s in steps if s in kept]
    _write_json(Path(root) / INDEX_FILE, index)
    for old in removed:
        shutil.rmtree(Path(root) / old, ignore_errors=True)
    return removed


def load_weights(model: Any, checkpoint: Path) -> None:
    """`checkpoint`'s model.safetensors into `model`, every tensor by name and shape (ModelError
    in one line if the two architectures differ)."""
    from safetensors.torch import load_model

    weights = Path(checkpoint) / "model.safetensors"
    if not weights.exists():
        raise ModelError(f"{weights} is missing")
    try:
        load_model(model, str(weights), strict=True, device=str(next(model.parameters()).device))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelError(f"{weights} does not fit this model's architecture: {first}") from None


def load_trainer_state(checkpoint: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Load weights, optimizer, scheduler and RNG state from `checkpoint`; return its state.json."""
    checkpoint = Path(checkpoint)
    load_weights(model, checkpoint)
    trainer = checkpoint / TRAINER_DIR
    state = json.loads((trainer / "state.json").read_text())
    load_optimizer(optimizer, load_file(str(trainer / "optimizer.safetensors")), state["optimizer_param_groups"])
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    restore_rng(load_file(str(trainer / "rng.safetensors")))
    return state
