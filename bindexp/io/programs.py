"""Programs files (JSON Lines, one program per line, as `scripts/find_robust.py` writes them) and
their sidecar `<name>.meta.json` beside `<name>.jsonl`. Reading one back trusts nothing it states:
see `bindexp.tasks.programs_file`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bindexp.io.streams import read_lines, write_lines

META_SUFFIX = ".meta.json"  # the sidecar of a programs file, <name>.meta.json


def robust_meta_path(path: Path) -> Path:
    """The sidecar of a programs file: `<name>.meta.json` beside `<name>.jsonl`."""
    return path.with_name(path.name.removesuffix(".jsonl") + META_SUFFIX)


def write_programs(path: Path, lines: list[dict[str, Any]], sidecar: dict[str, Any]) -> Path:
    """The lines (one JSON object each) at `path`, `sidecar` beside it."""
    write_lines(path, lines, default=str)
    robust_meta_path(path).write_text(json.dumps(sidecar, indent=1, default=str))
    return path


def read_robust(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a programs file as they are (unchecked)."""
    return read_lines(Path(path))
