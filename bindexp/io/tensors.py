"""Tensor bundles: named tensors as safetensors (no pickle), what describes them as JSON metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_bundle(path: Path, tensors: dict[str, Any], info: dict[str, Any], key: str = "bindexp") -> Path:
    """`tensors` at `path`, `info` as JSON text under `key` in the file's metadata."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={key: json.dumps(info, default=str)})
    return path


def write_tensors(path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> Path:
    """`tensors` at `path` with string `metadata` as it is."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    return path


def read_tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))
