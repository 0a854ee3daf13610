"""W&B tracking that never costs a result.

`Tracker` opens one W&B run (online with an API key, offline without, or none when disabled)
and gives every runner a local folder, `out_dir`, that always exists: the run's own files folder
when W&B runs, `output_dir/<run>` otherwise. Runners write results there first and log to W&B
second; a W&B failure prints one warning and the run carries on.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bindexp.runs.settings import RunSettings


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


class Tracker:
    """A W&B run (or none) plus a local results folder. Use as a context manager."""

    def __init__(self, settings: RunSettings, job_type: str, config: dict[str, Any] | None = None):
        self.job_type = job_type
        self.mode = resolve_wandb_mode(settings.wandb_mode)
        self.run: Any = None
        self._warned = False
        if self.mode != "disabled":
            self.run = self._call(lambda: self._init(settings, config or {}))
        if self.run is not None:
            self.out_dir = Path(self.run.dir)
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = settings.run_name or f"{job_type}-{stamp}-{secrets.token_hex(3)}"
            self.out_dir = Path(settings.output_dir) / name
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def _init(self, settings: RunSettings, config: dict[str, Any]):
        import wandb

        return wandb.init(
            project=settings.project,
            entity=settings.entity,
            group=settings.group,
            tags=list(settings.tags),
            name=settings.run_name,
            job_type=self.job_type,
            mode=self.mode,
            config={**settings.model_dump(mode="json"), **config},
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
        path = self.out_dir / name
        path.write_text(json.dumps(data, indent=2, default=str))
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
            self.write_json("error.json", {"error": reason})
        self.finish(exit_code=0 if exc_type is None else 1)
