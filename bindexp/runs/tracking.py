"""W&B tracking that never costs a result.

`Tracker` opens one W&B run (online with an API key, offline without, or none when disabled)
and gives every runner a local `RunFolder` (`folder`, at `out_dir`) that always exists: the run's
own files folder when W&B runs, `output_dir/<run>` otherwise, with `config.json` (job type and
settings) written first. Runners write results there first and log to W&B second; a W&B failure
prints one warning and the run carries on.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from bindexp.runs.folder import ERROR_FILE, SUMMARY_FILE, RunFolder, announce
from bindexp.runs.settings import RunSettings
from bindexp.vocab import JobType


def wandb_cli() -> str:
    """The `wandb` command of this interpreter's environment."""
    beside = Path(sys.executable).with_name("wandb")
    return str(beside) if beside.exists() else (shutil.which("wandb") or "wandb")


def resolve_wandb_mode(requested: str | None) -> str:
    """online/offline/disabled. None: the WANDB_MODE environment variable if set, else online when
    an API key is configured, else offline."""
    if requested is not None:
        return requested
    from_env = os.environ.get("WANDB_MODE", "").strip().lower()
    if from_env:
        return {"dryrun": "offline", "run": "online"}.get(from_env, from_env)
    try:
        import wandb

        return "online" if wandb.login(prompt=False, verify=False) else "offline"
    except Exception:  # noqa: BLE001 - any trouble reading credentials means offline
        return "offline"


@dataclasses.dataclass(frozen=True)
class Destination:
    """Where a run goes: the W&B mode, project, group, tags and name, and the local folder used
    when W&B is disabled or fails."""

    wandb_mode: str | None = None
    project: str = "bindexp"
    entity: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    run_name: str | None = None
    output_dir: str = "outputs"

    @classmethod
    def of(cls, settings: RunSettings) -> "Destination":
        return cls(settings.wandb_mode, settings.project, settings.entity, settings.group, tuple(settings.tags),
                   settings.run_name, settings.output_dir)


class Tracker:
    """A W&B run (or none) plus a local run folder. Use as a context manager.

    `settings` are logged whole (W&B config, config.json); `destination` says where the run goes,
    by default the destination fields of a `RunSettings`."""

    def __init__(self, settings: BaseModel, job_type: JobType, config: dict[str, Any] | None = None,
                 destination: Destination | None = None):
        if destination is None:
            if not isinstance(settings, RunSettings):
                raise TypeError(f"{type(settings).__name__} is not a RunSettings: pass destination=")
            destination = Destination.of(settings)
        self.job_type = job_type
        self.mode = resolve_wandb_mode(destination.wandb_mode)
        self.run: Any = None
        self._warned = False
        dumped = settings.model_dump(mode="json")
        if self.mode != "disabled":
            self.run = self._call(lambda: self._init(destination, {**dumped, **(config or {})}))
        if self.run is not None:
            self.out_dir = Path(self.run.dir)
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = destination.run_name or f"{job_type}-{stamp}-{secrets.token_hex(3)}"
            self.out_dir = Path(destination.output_dir) / name
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.folder = RunFolder(self.out_dir)
        self.folder.write_config(job_type, dumped, config)
        announce(self.run_dir or self.out_dir, self.out_dir)

    def _init(self, destination: Destination, config: dict[str, Any]):
        import wandb

        return wandb.init(
            project=destination.project,
            entity=destination.entity,
            group=destination.group,
            tags=list(destination.tags),
            name=destination.run_name,
            job_type=self.job_type,
            mode=self.mode,
            config=config,
        )

    def _call(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as err:  # noqa: BLE001 - W&B trouble must not end the run
            if not self._warned:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                print(f"warning: W&B call failed ({first}); results are still written locally", file=sys.stderr)
                self._warned = True
            return None

    @property
    def run_dir(self) -> Path | None:
        """The W&B run folder (what `wandb sync` and `wandb leet inspect` take)."""
        return Path(self.run.dir).parent if self.run is not None else None

    def update_config(self, values: dict[str, Any]) -> None:
        self.folder.add_to_config(values)
        if self.run is not None:
            self._call(lambda: self.run.config.update(values, allow_val_change=True))

    def log(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self._call(lambda: self.run.log(values))

    def set_summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self._call(lambda: self.run.summary.update(values))

    def log_table(self, key: str, frame: Any) -> None:
        """Log a pandas DataFrame as a wandb.Table."""
        if self.run is None:
            return

        def action():
            import wandb

            self.run.log({key: wandb.Table(dataframe=frame.reset_index(drop=True))})

        self._call(action)

    def log_image(self, key: str, path: Path) -> None:
        if self.run is None:
            return

        def action():
            import wandb

            self.run.log({key: wandb.Image(str(path))})

        self._call(action)

    def log_artifact(self, kind: str, paths: list[Path], metadata: dict[str, Any]) -> None:
        """One artifact of `kind` holding `paths`, named after the run."""
        if self.run is None:
            return

        def action():
            import wandb

            artifact = wandb.Artifact(f"{kind}-{self.run.id}", type=kind, metadata=metadata)
            for path in paths:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact)

        self._call(action)

    def write_json(self, name: str, data: Any) -> Path:
        return self.folder.write_json(name, data)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """The run's summary, on disk (summary.json) and in W&B."""
        path = self.folder.write_json(SUMMARY_FILE, summary)
        self.set_summary(summary)
        return path

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            print(f"results: {self.out_dir}")
            return
        run_dir, mode = self.run_dir, self.mode
        self._call(lambda: self.run.finish(exit_code=exit_code))
        print(f"results: {self.out_dir}")
        if mode == "offline":
            print(f"W&B run saved offline; upload it with: wandb sync {run_dir}")

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:  # the reason goes into the run, so a sweep's failed runs explain themselves
            reason = f"{exc_type.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            self.set_summary({"error": reason})
            self.folder.write_json(ERROR_FILE, {"error": reason})
        self.finish(exit_code=0 if exc_type is None else 1)
