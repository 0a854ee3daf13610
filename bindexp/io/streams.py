"""JSON Lines streams (results.jsonl, pairs.jsonl, history.jsonl, programs files): one JSON object
per line, appended as a run goes, so whatever finished is on disk if the run dies."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def append_lines(path: Path, records: Iterable[dict[str, Any]], **dumps: Any) -> None:
    """Append each record as one line (`dumps`: json.dumps keywords, e.g. default=str)."""
    try:
        with open(path, "a") as handle:
            handle.writelines(json.dumps(record, **dumps) + "\n" for record in records)
    except OSError as err:  # name the file (a full disk): the lines written before stay
        raise OSError(err.errno, err.strerror, str(path)) from None


def write_lines(path: Path, records: Iterable[dict[str, Any]], **dumps: Any) -> Path:
    """The records as a new file (replacing any), one line each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record, **dumps) + "\n" for record in records))
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every non-empty line's JSON (no checking: see bindexp.tasks.programs_file for untrusted files)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class Stream:
    """A JSONL file a run appends to record by record (`stream.append` fits a method's `on_pair`);
    it starts empty."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.unlink(missing_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        append_lines(self.path, [record])
