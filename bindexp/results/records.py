"""Finished runs as one shape, whatever their source: the W&B API or run folders on this disk.

    records = local_records("wandb", RunFilter(group="smoke-cpu"))          # offline runs, no server
    records = api_records("me/bindexp", RunFilter(sweep="abc123"))          # a W&B server
    record.config, record.summary, record.file("results.jsonl")

Local W&B run folders are read with `wandb leet inspect` (offline runs keep config and summary
only in their `.wandb` log); folders written with W&B disabled are read from the files the run
wrote (`bindexp.io.folder.RunFolder`: the job type and settings from config.json). The API
source filters on the server (`sweep`, `group`, `tags`, `jobType`), pages with `per_page`, and
retries with exponential backoff when the server answers HTTP 429.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bindexp.io.folder import ERROR_FILE, GRID_SIDECAR, SUMMARY_FILE, RunFolder
from bindexp.runs.tracking import wandb_cli

T = TypeVar("T")
SKIP_JOB_TYPES = ("compare",)  # a compare run is never an input of another comparison
# The one list of config entries that say how a run was run, not what it measured (the seed aside):
# bookkeeping, W&B, speed, provenance (version, commit), inputs, sweep, and the scalar companions
# of list settings. They never split runs that are otherwise the same, never become a column, and
# never make two runs different measurements; every other setting that differs does.
BOOKKEEPING = frozenset({
    "run_name", "group", "tags", "output_dir", "progress", "wandb_mode", "project", "entity", "batch_size",
    "pairs_per_chunk", "model_info", "device", "runs", "sweep", "provenance", "inputs", "causal_model",
    "hops_label", "hops_max", "hops_min", "seq_len_label", "seq_len_max", "seq_len_min",
    # training: where checkpoints went, how the run was resumed, logged and saved
    "checkpoint_dir", "checkpoint_root", "resume", "resumed_from_step", "keep_checkpoints", "overwrite_checkpoints",
    "log_every", "eval_batch_size", "threads", "log_artifacts",
})
AVERAGED = BOOKKEEPING | {"seed"}  # what may differ between runs averaged together


def measured_settings(record: RunRecord, drop: frozenset[str] = AVERAGED) -> dict[str, Any]:
    """The run's config without `drop` (default: bookkeeping and the seed) and private keys, sorted."""
    return {k: v for k, v in sorted(record.config.items()) if k not in drop and not k.startswith("_")}


@dataclasses.dataclass
class RunRecord:
    """One run: its identity, config, summary, and where its files are (or can be fetched to)."""

    run_id: str
    name: str | None
    source: str  # "local" | "api" | "files"
    job_type: str | None
    group: str | None
    tags: list[str]
    sweep: str | None
    state: str  # finished, failed, crashed, running ...
    exit_code: int | None
    config: dict[str, Any]
    summary: dict[str, Any]
    files_dir: Path | None
    fetch: Callable[[str], Path | None] | None = dataclasses.field(default=None, repr=False)
    unreadable: str | None = None  # why the run's own files cannot be read as a run (config.json ...)

    def file(self, name: str) -> Path | None:
        """The run's file `name` on this disk (downloaded first for API runs), or None."""
        if self.files_dir is not None and (self.files_dir / name).is_file():
            return self.files_dir / name
        return self.fetch(name) if self.fetch is not None else None

    def local_file(self, name: str) -> Path | None:
        """The run's file `name` only if it is already on this disk."""
        if self.files_dir is not None and (self.files_dir / name).is_file():
            return self.files_dir / name
        return None

    @property
    def problem(self) -> str | None:
        """Why this run cannot be compared (None: it finished cleanly)."""
        if self.unreadable:
            return self.unreadable
        if self.summary.get("error"):
            return f"failed: {self.summary['error']}"
        if self.exit_code not in (None, 0):
            return f"exit code {self.exit_code}"
        if self.state != "finished":
            return f"state {self.state}"
        return None


@dataclasses.dataclass(frozen=True)
class RunFilter:
    """Which runs to gather. Fields left None (or empty) do not filter."""

    sweep: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()  # a run matches when it has any of them
    job_type: str | None = None

    def server_filters(self) -> dict[str, Any]:
        """The MongoDB-style filters `wandb.Api().runs(path, filters=...)` sends to the server."""
        filters: dict[str, Any] = {}
        if self.sweep:
            filters["sweep"] = self.sweep
        if self.group:
            filters["group"] = self.group
        if self.tags:
            filters["tags"] = {"$in": list(self.tags)}
        if self.job_type:
            filters["jobType"] = self.job_type
        return filters

    def matches(self, record: RunRecord) -> bool:
        """The same selection as `server_filters`, applied here (for local runs)."""
        return (
            (not self.sweep or record.sweep == self.sweep)
            and (not self.group or record.group == self.group)
            and (not self.tags or bool(set(self.tags) & set(record.tags)))
            and (not self.job_type or record.job_type == self.job_type)
        )


# ---------------------------------------------------------------- local run folders


def run_folders(runs_dir: Path) -> tuple[list[Path], list[Path]]:
    """(W&B run folders, plain result folders) directly under `runs_dir`."""
    wandb_runs, plain = [], []
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.is_symlink()) if runs_dir.is_dir() else []
    for path in folders:  # (`latest-run` is a link to one of them)
        if any(path.glob("*.wandb")):
            wandb_runs.append(path)
        elif RunFolder(path).is_run():
            plain.append(path)
    return wandb_runs, plain


def local_records(runs_dir: str | Path, where: RunFilter = RunFilter(), workers: int = 4) -> list[RunRecord]:
    """Runs under `runs_dir` (a W&B dir such as `$WANDB_DIR/wandb`, or an `--output_dir`) that match."""
    wandb_runs, plain = run_folders(Path(runs_dir))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        records = list(pool.map(read_wandb_folder, wandb_runs))
    records += [read_plain_folder(path) for path in plain]
    return [r for r in records if r.job_type not in SKIP_JOB_TYPES and where.matches(r)]


def read_wandb_folder(path: Path) -> RunRecord:
    """A W&B run folder, through `wandb leet inspect` (config, summary, state, exit code, header)."""
    try:
        out = subprocess.run([wandb_cli(), "leet", "inspect", "--summary", "--json", str(path)],
                             capture_output=True, text=True, check=True, timeout=120)
        inspected = json.loads(out.stdout)
    except (subprocess.SubprocessError, json.JSONDecodeError, OSError):
        return read_plain_folder(path / "files", run_id=path.name.rsplit("-", 1)[-1], state="unreadable")
    header = _run_header(path)
    config = {k: v for k, v in (inspected.get("config") or {}).items() if k != "_wandb"}
    return RunRecord(
        run_id=inspected.get("run_id") or path.name.rsplit("-", 1)[-1],
        name=inspected.get("name") or header.get("display_name") or None,
        source="local",
        job_type=header.get("job_type") or RunFolder(path / "files").job_type,
        group=header.get("run_group") or None,
        tags=list(inspected.get("tags") or header.get("tags") or []),
        sweep=header.get("sweep_id") or config.get("sweep") or None,
        state=inspected.get("state") or "unknown",
        exit_code=inspected.get("exit_code"),
        config=config,
        summary=dict(inspected.get("summary") or {}),
        files_dir=path / "files",
    )


def _run_header(path: Path) -> dict[str, Any]:
    """The run record at the top of the `.wandb` log: job type, group, sweep (not in --summary)."""
    proc = subprocess.Popen([wandb_cli(), "leet", "inspect", "--json", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("type") == "run":
                return record.get("run") or {}
        return {}
    finally:
        proc.kill()
        proc.wait()


def read_plain_folder(path: Path, run_id: str | None = None, state: str | None = None) -> RunRecord:
    """A results folder written with W&B disabled: job type and settings from its config.json
    (folders written before config.json existed: from grid.json, else results.jsonl)."""
    folder = RunFolder(path)
    summary = folder.read_json(SUMMARY_FILE) or {}
    summary = summary if isinstance(summary, dict) else {}
    error = folder.read_json(ERROR_FILE)
    if isinstance(error, dict) and error.get("error"):
        summary.setdefault("error", error["error"])
    problem = folder.config_problem()
    config, job_type = folder.settings(), folder.job_type
    if config is None:
        config, job_type = ({}, None) if problem else _config_without_config_file(folder)
    tags = config.get("tags")
    return RunRecord(
        run_id=run_id or path.name, name=path.name, source="files", job_type=job_type,
        group=config.get("group"), tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        sweep=config.get("sweep"), state=state or ("finished" if summary else "unknown"), exit_code=None,
        config=config, summary=summary, files_dir=path, unreadable=problem,
    )


def _config_without_config_file(folder: RunFolder) -> tuple[dict[str, Any], str]:
    sidecar = folder.read_json(GRID_SIDECAR)
    if sidecar is not None:
        return dict(sidecar.get("settings") or {}), "patch"
    return _config_from_results(folder.results), "eval"


def _config_from_results(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError:  # a cut file: compare leaves the run out when it reads the results
        return {}
    if not rows:
        return {}
    config = {k: rows[0].get(k) for k in ("model", "task", "seed", "shots")}
    config["hops"] = sorted({r["hops"] for r in rows if r.get("hops") is not None})
    config["seq_len"] = sorted({r["seq_len"] for r in rows})
    return config


# ---------------------------------------------------------------- the W&B API


def is_rate_limited(err: BaseException) -> bool:
    """True when `err` (or an error it wraps) is an HTTP 429 / rate-limit answer."""
    seen: set[int] = set()
    stack: list[Any] = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        response = getattr(current, "response", None)
        for holder in (current, response):
            for attr in ("status_code", "http_status", "status"):
                if getattr(holder, attr, None) == 429:
                    return True
        text = str(current).lower()
        if "429" in text or "rate limit" in text or "too many requests" in text:
            return True
        if isinstance(current, BaseException):
            stack += [getattr(current, "exc", None), current.__cause__, current.__context__]
    return False


def with_backoff(action: Callable[[], T], *, retries: int = 6, base_delay: float = 2.0, max_delay: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """`action()`, retried after 2, 4, 8 ... s (or the server's Retry-After) while it is rate-limited."""
    for attempt in range(retries + 1):
        try:
            return action()
        except Exception as err:  # noqa: BLE001 - only rate limits are retried, the rest re-raised
            if attempt == retries or not is_rate_limited(err):
                raise
            delay = _retry_after(err) or min(max_delay, base_delay * 2**attempt)
            print(f"warning: W&B API rate-limited (429); retrying in {delay:.1f} s", file=sys.stderr)
            sleep(delay)
    raise AssertionError("unreachable")


def _retry_after(err: BaseException) -> float | None:
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    try:
        return float(headers.get("Retry-After")) if headers.get("Retry-After") else None
    except (TypeError, ValueError):
        return None


def api_records(path: str, where: RunFilter = RunFilter(), *, per_page: int = 100, api: Any = None,
                cache_dir: str | Path = "outputs/compare/downloads", retry: dict[str, Any] | None = None
                ) -> list[RunRecord]:
    """Runs of `entity/project` matching `where`, filtered on the server and read page by page.

    Pages are fetched by index (`runs[i]`), so a page that failed with 429 is fetched again from
    the same cursor. Files (results.jsonl, grid.*) are downloaded into `cache_dir/<run id>/` only
    when the comparison needs them.
    """
    retry = retry or {}
    if api is None:
        import wandb

        api = with_backoff(lambda: wandb.Api(timeout=60), **retry)
    runs = with_backoff(lambda: api.runs(path, filters=where.server_filters(), per_page=per_page, lazy=False),
                        **retry)
    records, index = [], 0
    while True:
        try:
            run = with_backoff(lambda: runs[index], **retry)  # noqa: B023 - called at once
        except IndexError:
            break
        index += 1
        record = record_from_api_run(run, Path(cache_dir), retry)
        if record.job_type not in SKIP_JOB_TYPES:
            records.append(record)
    return records


def record_from_api_run(run: Any, cache_dir: Path, retry: dict[str, Any] | None = None) -> RunRecord:
    """A `wandb.apis.public.Run` as a RunRecord; its files are fetched on first use."""
    files_dir = cache_dir / str(run.id)

    def fetch(name: str) -> Path | None:
        def download() -> Path | None:
            remote = run.file(name)
            if not getattr(remote, "size", 0):
                return None
            files_dir.mkdir(parents=True, exist_ok=True)
            remote.download(root=str(files_dir), replace=True)
            return files_dir / name

        try:
            return with_backoff(download, **(retry or {}))
        except Exception as err:  # noqa: BLE001 - a missing file means: use the summary instead
            print(f"warning: could not download {name} of run {run.id} ({err})", file=sys.stderr)
            return None

    summary = dict(run.summary_metrics or {})
    return RunRecord(
        run_id=str(run.id),
        name=getattr(run, "display_name", None) or getattr(run, "name", None),
        source="api",
        job_type=getattr(run, "job_type", None),
        group=getattr(run, "group", None),
        tags=list(getattr(run, "tags", None) or []),
        sweep=getattr(run, "sweep_name", None),
        state=str(run.state),
        exit_code=None,
        config=dict(run.config or {}),
        summary=summary,
        files_dir=files_dir,
        fetch=fetch,
    )


def usable(records: Sequence[RunRecord]) -> tuple[list[RunRecord], list[tuple[RunRecord, str]]]:
    """(runs that finished cleanly, [(run, why it is left out)])."""
    good, bad = [], []
    for record in records:
        problem = record.problem
        if problem is None:
            good.append(record)
        else:
            bad.append((record, problem))
    return good, bad
