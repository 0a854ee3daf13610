"""Checkpoints: a Hugging Face model directory plus the trainer's state, with no pickle.

    <root>/step-000200/             config.json, model.safetensors, tokenizer.json ... (load_model reads it)
    <root>/step-000200/trainer/     optimizer.safetensors, rng.safetensors, state.json
    <root>/checkpoints.json         {"latest": "step-000200", "best": "step-000100", ...}

Tensors go to safetensors, everything else to JSON. A checkpoint is written to a staging folder and
renamed into place, and `checkpoints.json` is replaced atomically, so a run killed while saving
leaves the previous checkpoint intact; the staging folders such a kill leaves are removed by the
next writer (`clean_staging`). The index holds names of folders beside it (`step-NNNNNN`), never
paths: an entry that is anything else is refused (`read_index`), so nothing outside the folder is
ever read as a checkpoint or deleted. Every file read back is checked first: a damaged one is an
InputError naming the file, in one line.
"""

from __future__ import annotations

import errno
import json
import math
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from bindexp.errors import InputError, ModelError
from bindexp.io.folder import replace_text

INDEX_FILE = "checkpoints.json"
TRAINER_DIR = "trainer"
STATE_FILE = "state.json"  # in TRAINER_DIR: settings, history, step, optimizer param groups, scheduler
OPTIMIZER_FILE = "optimizer.safetensors"  # in TRAINER_DIR
RNG_FILE = "rng.safetensors"  # in TRAINER_DIR
STAGING_PREFIX = ".staging-"  # a checkpoint being written: .staging-step-000200-<random>/
STEP_NAME = re.compile(r"step-\d{6,}")
STATE_KEYS = {"step": int, "settings": dict, "history": list, "optimizer_param_groups": list, "scheduler": dict}


def step_name(step: int) -> str:
    return f"step-{step:06d}"




def read_index(root: Path) -> dict[str, Any]:
    """`root`'s checkpoints.json ({} when there is none), checked: a JSON object whose `steps`,
    `latest` and `best` are checkpoint names (`step-NNNNNN`) of this folder, `latest` and `best`
    among the steps, `best_metric` a number. InputError naming the file otherwise."""
    path = Path(root) / INDEX_FILE
    if not path.exists():
        return {}
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path}: not a readable checkpoint index ({_first_line(err)})") from None
    if not isinstance(index, dict) or not isinstance(index.get("steps", []), list):
        raise InputError(f"{path}: not a checkpoint index (a JSON object with a list of steps)")
    steps = index.get("steps", [])
    for key, name in [*(("steps", s) for s in steps), ("latest", index.get("latest")), ("best", index.get("best"))]:
        if name is not None and not (isinstance(name, str) and STEP_NAME.fullmatch(name)):
            raise InputError(f"{path}: {key} entry {name!r} is not a checkpoint name (step-NNNNNN): an index "
                             "names folders beside it, never paths")
        if key != "steps" and name is not None and name not in steps:
            raise InputError(f"{path}: {key} is {name!r}, which its steps do not list")
    metric = index.get("best_metric")
    if metric is not None and (isinstance(metric, bool) or not isinstance(metric, (int, float)) or math.isnan(metric)):
        raise InputError(f"{path}: best_metric is {metric!r}, not a number")
    return index


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    latest = read_index(root).get("latest")
    return Path(root) / latest if latest else None


def holds_checkpoints(root: Path) -> str | None:
    """What says `root` holds a training run's checkpoints (its index's latest, a step folder), or None."""
    root = Path(root)
    latest = read_index(root).get("latest")
    if latest:
        return f"checkpoints up to {latest}"
    steps = sorted(p.name for p in root.glob("step-*") if p.is_dir()) if root.is_dir() else []
    return f"checkpoint folders ({', '.join(steps[:3])}{' ...' if len(steps) > 3 else ''})" if steps else None


def clean_staging(root: Path) -> list[str]:
    """Remove what a run killed while saving left in `root` (staging folders, a staged index);
    only a writer holding the folder's lock may call this. Returns the names removed."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(STAGING_PREFIX) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        elif path.name == f".{INDEX_FILE}.tmp" and path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


def clear_checkpoints(root: Path) -> list[str]:
    """Remove the checkpoints `root`'s index lists and the index itself (an explicit overwrite);
    only a writer holding the folder's lock may call this. Returns the names removed."""
    root = Path(root)
    index = read_index(root)
    names = list(dict.fromkeys([*index.get("steps", []), *(index[k] for k in ("latest", "best") if index.get(k))]))
    for name in names:
        shutil.rmtree(root / name, ignore_errors=True)
    (root / INDEX_FILE).unlink(missing_ok=True)
    return names


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def write_checkpoint(root: Path, step: int, model: Any, tokenizer: Any, optimizer_state: dict[str, Any],
                     rng_state: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write checkpoint `step` under `root` and return its folder (not yet in the index): the model
    and tokenizer (`save_pretrained`), the optimizer's tensors (`optimizer_state`) and the RNG
    states as safetensors, `state` as JSON."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / step_name(step)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f"{STAGING_PREFIX}{step_name(step)}-"))
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
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if not isinstance(err, OSError) and "os error 28" in str(err):  # safetensors' own error for ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device", str(target)) from None
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
    replace_text(Path(root) / INDEX_FILE, json.dumps(index, indent=2))
    for old in removed:
        shutil.rmtree(Path(root) / old, ignore_errors=True)
    return removed


def load_weights(model: Any, checkpoint: Path) -> None:
    """`checkpoint`'s model.safetensors into `model`, every tensor by name and shape (ModelError
    in one line if the two architectures differ)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    weights = Path(checkpoint) / "model.safetensors"
    if not weights.exists():
        raise ModelError(f"{weights} is missing")
    try:
        load_model(model, str(weights), strict=True, device=str(next(model.parameters()).device))
    except RuntimeError as err:
        raise ModelError(f"{weights} does not fit this model's architecture: {_first_line(err)}") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{weights}: not a readable safetensors file ({_first_line(err)})") from None


def read_trainer_files(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A checkpoint's trainer state: state.json, the optimizer's tensors, the RNG states (each
    checked: InputError naming the damaged file)."""
    trainer = Path(checkpoint) / TRAINER_DIR
    rng = _read_tensors(trainer / RNG_FILE)
    cpu = rng.get("cpu")
    if cpu is None or str(cpu.dtype) != "torch.uint8" or cpu.dim() != 1:
        raise InputError(f"{trainer / RNG_FILE}: holds no CPU generator state (a 1-d uint8 tensor 'cpu')")
    return read_trainer_state(checkpoint), _read_tensors(trainer / OPTIMIZER_FILE), rng


def _read_tensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable safetensors file ({_first_line(err)})") from None


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's state.json (settings, history, step, optimizer groups, scheduler), checked:
    InputError naming the file when it is missing, cut or of the wrong shape."""
    path = Path(checkpoint) / TRAINER_DIR / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path}: not a readable trainer state ({_first_line(err)})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a trainer state (a JSON object)")
    for key, kind in STATE_KEYS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise InputError(f"{path}: {key} is missing or not a {kind.__name__}")
    return state
