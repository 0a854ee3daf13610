"""Tables (CSV, markdown) and figures (PNG) a run or a comparison writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_csv(frame: Any, path: Path) -> Path:
    """A pandas DataFrame as CSV, without its index."""
    frame.to_csv(path, index=False)
    return path


def write_text(text: str, path: Path) -> Path:
    path.write_text(text)
    return path


def write_figure(figure: Any, path: Path, dpi: int = 110) -> Path:
    """A matplotlib Figure (made without pyplot, see bindexp.plots) as PNG."""
    figure.savefig(path, dpi=dpi)
    return path
