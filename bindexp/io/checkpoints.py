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

from safetensors.torch import load_file, save_file

from bindexp.errors import ModelError

INDEX_FILE = "checkpoints.json"
TRAINER_DIR = "trainer"
STATE_FILE = "state.json"  # in TRAINER_DIR: settings, history, step, optimizer param groups, scheduler
OPTIMIZER_FILE = "optimizer.safetensors"  # in TRAINER_DIR
RNG_FILE = "rng.safetensors"  # in TRAINER_DIR


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


def write_checkpoint(root: Path, step: int, model: Any, tokenizer: Any, optimizer_state: dict[str, Any],
                     rng_state: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write checkpoint `step` under `root` and return its folder (not yet in the index): the model
    and tokenizer (`save_pretrained`), the optimizer's tensors (`optimizer_state`) and the RNG
    states as safetensors, `state` as JSON."""
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
        save_file(optimizer_state, str(trainer / OPTIMIZER_FILE))
        save_file(rng_state, str(trainer / RNG_FILE))
        (trainer / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
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


def read_trainer_files(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A checkpoint's trainer state: state.json, the optimizer's tensors, the RNG states."""
    trainer = Path(checkpoint) / TRAINER_DIR
    state = json.loads((trainer / STATE_FILE).read_text())
    return state, load_file(str(trainer / OPTIMIZER_FILE)), load_file(str(trainer / RNG_FILE))


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's state.json (settings, history, ...)."""
    return json.loads((Path(checkpoint) / TRAINER_DIR / STATE_FILE).read_text())
