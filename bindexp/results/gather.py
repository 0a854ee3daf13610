"""Which runs a comparison counts: gathered from the chosen source (`bindexp.results.records`:
the W&B API or local run folders, one RunRecord shape), then left out with their reason when they
failed or did not finish, when their files cannot be read (a cut results.jsonl, a broken summary),
or when a newer run made the same measurement (same settings and seed: the newest is kept).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from bindexp.errors import InputError
from bindexp.io.folder import GRID_SIDECAR, RESULTS_FILE, SUMMARY_FILE
from bindexp.results.grids import load_grid
from bindexp.results.records import BOOKKEEPING, RunFilter, RunRecord, api_records, local_records, measured_settings
from bindexp.results.tables import run_cells


def gather(source: str, where: RunFilter, *, runs_dir: str | None = None, entity: str | None = None,
           project: str = "bindexp", per_page: int = 100, cache_dir: Path | None = None) -> list[RunRecord]:
    """Every run `where` selects, from `source` ("local" run folders or the W&B "api")."""
    if source == "api":
        require_wandb_key()
        path = f"{entity}/{project}" if entity else project
        return api_records(path, where, per_page=per_page, cache_dir=cache_dir)
    folder = Path(runs_dir) if runs_dir else default_runs_dir()
    if not folder.is_dir():
        raise InputError(f"no runs folder {folder} (set --runs_dir or WANDB_DIR)")
    return local_records(folder, where)


def require_wandb_key() -> None:
    """Raise InputError when no W&B API key is configured (WANDB_API_KEY or a netrc entry)."""
    if os.environ.get("WANDB_API_KEY", "").strip() or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth

        host = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
        if read_netrc_auth(host=host):
            return
    except Exception:  # noqa: BLE001 - cannot tell: let the API answer
        return
    raise InputError("--source=api needs a W&B API key (set WANDB_API_KEY or run `wandb login`); "
                     "for runs on this disk use --source=local")


def default_runs_dir() -> Path:
    return Path(os.environ.get("WANDB_DIR") or ".") / "wandb"


def broken_summary(record: RunRecord) -> str | None:
    """Why the run's summary.json on this disk cannot be read, else None."""
    summary = record.local_file(SUMMARY_FILE)
    try:
        if summary is not None and not isinstance(json.loads(summary.read_text()), dict):
            return f"{SUMMARY_FILE} is not a JSON object"
    except (OSError, ValueError):
        return f"{SUMMARY_FILE} is not valid JSON (truncated?)"
    return None


def broken_files(record: RunRecord) -> str | None:
    """Why a run's results cannot be read (a cut results.jsonl, a broken grid), else None."""
    try:
        if record.job_type in (None, "eval") and "accuracy" in record.summary:
            cells = run_cells(record)
            if cells.empty or (cells["n"] <= 0).any():
                return f"{RESULTS_FILE} has no results"
            counted, expected = int(cells["n"].sum()), record.summary.get("n_programs")
            if isinstance(expected, int) and counted != expected:
                return (f"{RESULTS_FILE} has {counted} results but its summary counts {expected} programs "
                        "(truncated?)")
        if record.job_type == "patch" and record.file(GRID_SIDECAR) is not None:
            load_grid(record)
    except Exception as err:  # noqa: BLE001 - any unreadable file leaves the run out, never the comparison
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        return f"files unreadable (truncated?): {first}"
    return None


VERSION_KEY = "bindexp_version"  # the column runs of different versions are grouped apart by


def run_version(record: RunRecord) -> str:
    """The bindexp version that made the run (its config's provenance), or "unknown"."""
    provenance = record.config.get("provenance")
    version = provenance.get(VERSION_KEY) if isinstance(provenance, dict) else None
    return str(version or record.config.get(VERSION_KEY) or "unknown")


def versions_apart(records: Sequence[RunRecord], mix: bool) -> list[str]:
    """The versions among `records`. When there are several and `mix` is off, each run's version
    becomes one of its settings (`bindexp_version`), so runs of different versions are never
    averaged together or taken for duplicates."""
    versions = sorted({run_version(r) for r in records})
    if len(versions) > 1 and not mix:
        for record in records:
            record.config[VERSION_KEY] = run_version(record)
    return versions


def finished_at(record: RunRecord) -> float:
    """When the run finished: its W&B summary's _timestamp, else its files' modification time, else 0."""
    stamp = record.summary.get("_timestamp")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        return float(stamp)
    for name in (SUMMARY_FILE, RESULTS_FILE, GRID_SIDECAR):
        path = record.local_file(name)
        if path is not None:
            return path.stat().st_mtime
    return 0.0


def run_identity(record: RunRecord) -> str | None:
    """What makes two runs the same measurement: job type, every setting but bookkeeping, and the seed.
    None when the run's config has no seed (nothing to compare)."""
    if "seed" not in record.config:
        return None
    settings = measured_settings(record, BOOKKEEPING)
    return json.dumps([record.job_type, settings], sort_keys=True, default=str)


def drop_duplicates(records: Sequence[RunRecord]) -> tuple[list[RunRecord], list[tuple[RunRecord, str]]]:
    """(runs kept, [(run, why)]): of runs with the same settings and seed, only the newest counts."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        identity = run_identity(record)
        if identity is not None:
            groups.setdefault(identity, []).append(record)
    dropped = {}
    for group in groups.values():
        newest = max(group, key=lambda r: (finished_at(r), r.run_id))
        for record in group:
            if record is not newest:
                dropped[id(record)] = (record, f"duplicate of run {newest.run_id} (same settings and seed; "
                                               f"the newest is kept)")
    return [r for r in records if id(r) not in dropped], list(dropped.values())


def select_runs(records: Sequence[RunRecord]) -> tuple[list[RunRecord], list[tuple[RunRecord, str]], int]:
    """(runs to compare, [(run, why it is left out)], how many of those are duplicates): failed or
    unfinished runs, runs whose files cannot be read, and older duplicates are left out."""
    good, left_out = [], []
    for record in records:
        why = broken_summary(record) or record.problem or broken_files(record)
        if why is None:
            good.append(record)
        else:
            left_out.append((record, why))
    kept, duplicates = drop_duplicates(good)
    return kept, left_out + duplicates, len(duplicates)
