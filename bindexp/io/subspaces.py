"""Saved subspaces: what one subspace run learned, for another run to apply (`--subspace_from`).

One safetensors file, `subspaces.safetensors`: a tensor per subspace ([k, d] orthonormal rows,
e.g. `das_k16`, `boundless_das`, `pca_probe_value`, `diff_pca_k16`), and JSON metadata under the
key `bindexp`: the model's residual width, the layer and role of the site, and per subspace its
method and k (plus the run's model, task and counterfactual, for the reader to see). No pickle.

    write_subspaces(path, {"das_k16": ("das", rows)}, width=576, layer=9, role="root_value", source={...})
    saved = read_subspaces(path_or_folder)      # a file, or a folder that holds one (a run folder)
    saved.bases["das_k16"], saved.layer, saved.width
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bindexp.errors import InputError
from bindexp.io.folder import SUBSPACES_FILE
from bindexp.io.tensors import write_bundle

METADATA_KEY = "bindexp"


@dataclasses.dataclass(frozen=True)
class SavedSubspaces:
    path: Path
    width: int
    layer: int
    role: str
    bases: dict[str, Any]  # name -> [k, d] tensor
    methods: dict[str, str]  # name -> method
    source: dict[str, Any]  # what the saving run was (model, task, counterfactual, hops ...)


def write_subspaces(path: Path, bases: dict[str, tuple[str, Any]], *, width: int, layer: int, role: str,
                    source: dict[str, Any] | None = None) -> Path:
    """`bases` (name -> (method, [k, d] rows)) at `path` with their metadata."""
    tensors = {name: rows.detach().float().contiguous().cpu() for name, (_, rows) in bases.items()}
    info = {"width": width, "layer": layer, "role": role, "source": source or {},
            "subspaces": {name: {"method": method, "k": int(rows.shape[0])} for name, (method, rows) in bases.items()}}
    return write_bundle(Path(path), tensors, info, key=METADATA_KEY)


def subspace_file(path: str | Path) -> Path:
    """`path` itself when it is a file, else the subspaces file inside the folder `path` (directly or
    in the `files/` folder of a W&B run directory); InputError when there is none."""
    path = Path(path)
    if path.is_file():
        return path
    for candidate in (path / SUBSPACES_FILE, path / "files" / SUBSPACES_FILE):
        if candidate.is_file():
            return candidate
    raise InputError(f"{path} is neither a subspaces file nor a folder holding {SUBSPACES_FILE}")


def read_subspaces(path: str | Path) -> SavedSubspaces:
    """The subspaces saved at `path` (a file or a folder holding one), checked: every tensor [k, d]
    with d the recorded width and k as recorded."""
    from safetensors import safe_open

    file = subspace_file(path)
    try:
        with safe_open(str(file), "pt") as handle:
            info = json.loads((handle.metadata() or {})[METADATA_KEY])
            bases = {name: handle.get_tensor(name) for name in handle.keys()}
    except (KeyError, ValueError, OSError) as err:
        raise InputError(f"{file} is not a subspaces file bindexp wrote ({type(err).__name__})") from None
    declared = info.get("subspaces", {})
    width = int(info["width"])
    for name, rows in bases.items():
        if name not in declared or rows.ndim != 2 or rows.shape[1] != width or rows.shape[0] != declared[name]["k"]:
            raise InputError(f"{file}: subspace {name!r} does not match its metadata (shape {tuple(rows.shape)})")
    if not bases:
        raise InputError(f"{file} holds no subspace")
    return SavedSubspaces(file, width, int(info["layer"]), str(info["role"]), bases,
                          {name: declared[name]["method"] for name in bases}, info.get("source", {}))
