"""The grid format: raw arrays as safetensors (no pickle) plus a JSON sidecar with axes, labels and
settings; `Grid.load` (bindexp.interventions.results.grid) reads it back through `read_grid_files`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

GRID_ARRAYS = "grid.safetensors"
GRID_SIDECAR = "grid.json"


def write_grid(grid: Any, folder: Path, metadata: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """`grid` (a `Grid`) into `folder`: its arrays and its sidecar (with `metadata` as its settings)."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"n": grid.n.astype(np.float32)}
    for metric in grid.metrics:
        arrays[metric] = grid.mean[metric].astype(np.float32)
        arrays[f"{metric}_ci_low"] = grid.ci_low[metric].astype(np.float32)
        arrays[f"{metric}_ci_high"] = grid.ci_high[metric].astype(np.float32)
        if metric in grid.counts:
            arrays[f"{metric}_n"] = grid.counts[metric].astype(np.float32)
    extra_counts = [name for name in grid.counts if name not in grid.mean]  # e.g. not_run
    for name in extra_counts:
        arrays[f"{name}_count"] = grid.counts[name].astype(np.float32)
    arrays_path, sidecar_path = folder / GRID_ARRAYS, folder / GRID_SIDECAR
    save_file(arrays, str(arrays_path))
    sidecar = {"axes": list(grid.axes), "labels": grid.labels, "metrics": grid.metrics,
               "counts": extra_counts, "token_labels": grid.token_labels, "info": grid.info, "settings": metadata or {}}
    sidecar_path.write_text(json.dumps(sidecar, indent=2, default=str))
    return arrays_path, sidecar_path


def read_grid_files(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A grid folder's sidecar and arrays, as written by `write_grid`."""
    from safetensors.numpy import load_file

    sidecar = json.loads((Path(folder) / GRID_SIDECAR).read_text())
    return sidecar, load_file(str(Path(folder) / GRID_ARRAYS))
