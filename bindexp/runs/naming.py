"""What a run is called, how it is found and where its code came from, computed from its settings.

    identity = run_identity("patch", settings.model_dump(mode="json"))
    identity.name     # "patch smollm2-135m binding h2 L6 resid_pre exact root_value s0"
    identity.tags     # ("patch", "smollm2-135m", "binding", "resid_pre", "exact", "root_value", "hops:2", ...)
    identity.config   # scalars for panels: {"hops_label": "2", "hops_max": 2, ...}

`Tracker` uses it for every job type: the name unless `--run_name` is given, the tags besides the
user's own (`--tags`), and the scalar config keys beside the settings.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import bindexp

LIST_AXES = ("hops", "seq_len")  # settings that may be a list (eval, robust): panels get a scalar too
MAX_TAG = 64  # W&B's limit on a tag's length
PROVENANCE_KEY = "provenance"  # config key: bindexp version, git commit, dirty working tree


@dataclasses.dataclass(frozen=True)
class RunIdentity:
    name: str
    tags: tuple[str, ...]
    config: dict[str, Any]  # scalar companions of list settings, e.g. hops_label / hops_max


def model_label(model: str) -> str:
    """A model as a name part: bundled names and hub ids as given, a local path by its last part."""
    path = Path(model)
    if model.endswith(".gguf") or model.startswith((".", "/", "~")) or path.exists():
        return path.name.removesuffix(".gguf") or model
    return model


def values_label(value: Any) -> str:
    """`[1, 2, 3, 4]` -> `1-4`, `[1, 3]` -> `1,3`, `[2]` or `2` -> `2`."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) > 2 and all(isinstance(v, int) for v in values) and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(str(v) for v in values)


def _has_axis(task: str | None, axis: str) -> bool:
    """Whether the task has this condition axis (an unknown task: assume it has)."""
    if task is None:
        return True
    from bindexp.tasks.registry import get_task

    try:
        return axis in get_task(task).axes
    except Exception:  # noqa: BLE001 - a task registered in another process: keep the part
        return True


def run_identity(job_type: str, settings: Mapping[str, Any], user_tags: Sequence[str] = ()) -> RunIdentity:
    """The run's name, tags and scalar config from its job type and settings (`model_dump(mode="json")`)."""
    get = settings.get
    task = get("task")
    if job_type == "compare":
        label = get("sweep") or get("group") or "-".join(get("tags") or []) or get("job_type") or "all"
        return RunIdentity(f"compare {label}", _tags(["compare", *user_tags]), {})
    models = get("models") or ([get("model")] if get("model") else [])
    models = models or ([get("checkpoints")] if get("checkpoints") else [])  # over_training: the checkpoint folder
    model = "+".join(model_label(str(m)) for m in models)
    hops = get("hops") if get("hops") is not None and _has_axis(task, "hops") else None
    method = get("method")
    site = get("site") if method != "knockout" else None  # knockout blocks attention; no site is written
    parts = [job_type, model, task,
             f"h{values_label(hops)}" if hops is not None else None,
             f"L{values_label(get('seq_len'))}" if get("seq_len") is not None else None,
             site, "all-positions" if get("positions") == "all" else None, method, get("counterfactual"),
             f"s{get('seed')}" if get("seed") is not None else None]
    tags = [job_type, *(model_label(str(m)) for m in models), task, site, method, get("counterfactual"),
            f"hops:{values_label(hops)}" if hops is not None else None,
            f"shots:{get('shots') or 0}" if "shots" in settings else None,
            f"template:{get('template')}" if get("template") not in (None, "raw") else None,
            f"sweep:{get('sweep')}" if get("sweep") else None, *user_tags]
    config: dict[str, Any] = {}
    for axis in LIST_AXES:
        value = get(axis)
        if isinstance(value, list) and value and (axis != "hops" or hops is not None):
            config[f"{axis}_label"] = values_label(value)
            config[f"{axis}_max"] = max(value)
            config[f"{axis}_min"] = min(value)
    return RunIdentity(" ".join(str(p) for p in parts if p not in (None, "")), _tags(tags), config)


def check_run_name(name: str | None) -> str | None:
    """A run name given by the user is a name, never a path: it names the run's folder inside
    `--output_dir` when W&B is off, so a separator, `.` / `..`, a leading dot or a control
    character is refused (ValueError, one line)."""
    if name is None:
        return None
    if (not name.strip() or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\")
            or any(ord(c) < 32 for c in name) or len(name) > 128):
        raise ValueError(f"run_name {name!r} is not a plain name: no path separators, no leading dot, "
                         "at most 128 characters (it names the run's folder inside output_dir)")
    return name


def slug(text: str) -> str:
    """Text as an artifact name or alias: letters, digits, `-`, `_`, `.` only (`Qwen/Qwen3` -> `Qwen-Qwen3`)."""
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9_.-]", "-", text)).strip("-")


def artifact_name(kind: str, settings: Mapping[str, Any], detail: str | None = None) -> str:
    """One collection per kind of result and model: `eval-results-smollm2-135m`,
    `patch-grid-smollm2-135m-resid_pre` (detail: what else splits the kind, e.g. the site)."""
    models = settings.get("models") or ([settings["model"]] if settings.get("model") else [])
    parts = [kind, "+".join(model_label(str(m)) for m in models) or None, detail]
    return slug("-".join(str(p) for p in parts if p))[:128]


def _tags(tags: Sequence[Any]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for tag in tags:
        if tag not in (None, ""):
            seen.setdefault(str(tag)[:MAX_TAG], None)
    return tuple(seen)


@functools.lru_cache(maxsize=1)
def provenance() -> dict[str, Any]:
    """bindexp's version, and the git commit of the checkout bindexp is imported from and whether its
    working tree has changes (`git status --porcelain`); both None when it is not a git checkout."""
    checkout = Path(bindexp.__file__).resolve().parents[1]
    commit, dirty = None, None
    try:
        top = _git(checkout, "rev-parse", "--show-toplevel")  # an installed copy inside another repo is not one
        if top is not None and Path(top).resolve() == checkout:
            commit = _git(checkout, "rev-parse", "HEAD")
            status = _git(checkout, "status", "--porcelain")
            dirty = None if status is None else bool(status)
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"bindexp_version": bindexp.__version__, "git_commit": commit, "git_dirty": dirty}


def _git(checkout: Path, *args: str) -> str | None:
    out = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=20)
    return out.stdout.strip() if out.returncode == 0 else None
