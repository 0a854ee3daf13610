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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bindexp.errors import InputError
from bindexp.io.folder import ERROR_FILE, SUMMARY_FILE, RunFolder, announce, check_writable_dir
from bindexp.io.locks import FolderLock
from bindexp.runs.naming import PROVENANCE_KEY, artifact_name, provenance, run_identity, slug
from bindexp.runs.settings import WandbGroup


def wandb_cli() -> str:
    """The `wandb` command of this interpreter's environment."""
    beside = Path(sys.executable).with_name("wandb")
    return str(beside) if beside.exists() else (shutil.which("wandb") or "wandb")


def wandb_cli_hint() -> str:
    """`wandb` as the user would type it: `.venv/bin/wandb` (relative to the working directory
    when it lies below it) when this interpreter's environment has one, else plain `wandb`."""
    beside = Path(sys.executable).with_name("wandb")
    if not beside.exists():
        return "wandb"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


def input_digest(path: Path) -> str:
    """sha256 of a file's bytes; of a directory's listing (names, sizes) for a checkpoint folder."""
    import hashlib

    digest = hashlib.sha256()
    if path.is_dir():
        listing = sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file())
        digest.update(repr(listing).encode())
        return "listing-sha256:" + digest.hexdigest()[:16]
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


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
    def of(cls, settings: WandbGroup) -> Destination:
        return cls(settings.wandb_mode, settings.project, settings.entity, settings.group, tuple(settings.tags),
                   settings.run_name, settings.output_dir)


class Tracker:
    """A W&B run (or none) plus a local run folder. Use as a context manager.

    `settings` are logged whole (W&B config, config.json) with the scalar companions of list
    settings (`hops_label`, `hops_max` ...) and the provenance (bindexp version, git commit, dirty
    tree); `destination` says where the run goes, by default the destination fields of a
    `WandbGroup`. The run is named and tagged from its settings (`bindexp.runs.naming`) unless
    `run_name` is given (`name_defaults`: values the name and tags take for settings the job does not
    have); a programs file or a local model it reads is declared as an input. A local run folder
    (W&B off or failing) is held for the run (`claim_run_folder`): refused while another process
    writes there or when it holds a run already, unless this run `continues` one of its job type."""

    def __init__(self, settings: BaseModel, job_type: str, config: dict[str, Any] | None = None,
                 destination: Destination | None = None, name_defaults: dict[str, Any] | None = None,
                 continues: bool = False):
        if destination is None:
            if not isinstance(settings, WandbGroup):
                raise TypeError(f"{type(settings).__name__} has no W&B settings (WandbGroup): pass destination=")
            destination = Destination.of(settings)
        self.job_type = job_type
        self.mode = resolve_wandb_mode(destination.wandb_mode)
        self.run: Any = None
        self._warned = False
        dumped = settings.model_dump(mode="json")
        self.settings = dumped
        self.identity = run_identity(job_type, {**(name_defaults or {}), **dumped}, destination.tags)
        self.name = destination.run_name or self.identity.name
        extra = {**self.identity.config, PROVENANCE_KEY: provenance(), **(config or {})}
        self.extra = dict(extra)
        if self.mode != "disabled":
            self.run = self._call(lambda: self._init(destination, {**dumped, **extra}))
        self._lock: FolderLock | None = None
        if self.run is not None:
            self.out_dir = Path(self.run.dir)  # W&B's own folder, new for every run
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = destination.run_name or f"{job_type}-{stamp}-{secrets.token_hex(3)}"
            self.out_dir = Path(destination.output_dir) / name
            self._lock = claim_run_folder(self.out_dir, job_type, self.name, continues)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.folder = RunFolder(self.out_dir)
        self.folder.write_config(job_type, dumped, extra)
        announce(self.run_dir or self.out_dir, self.out_dir)
        self.declare_inputs()

    def _init(self, destination: Destination, config: dict[str, Any]):
        import wandb

        return wandb.init(
            project=destination.project,
            entity=destination.entity,
            group=destination.group or self.settings.get("sweep"),
            tags=list(self.identity.tags),
            name=self.name,
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
        self.extra.update(values)
        self.folder.add_to_config(values)
        if self.run is not None:
            self._call(lambda: self.run.config.update(values, allow_val_change=True))

    def log(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self._call(lambda: self.run.log(values))

    def log_steps(self, step: str, rows: list[dict[str, Any]], prefix: str) -> None:
        """Per-condition numbers as history, one step per row: `step` (e.g. hops, layer) is the
        x-axis of every `<prefix>/...` key (`define_metric`), so W&B's default line charts plot
        them against it. Neither enters the summary (the summary keeps the run's own numbers)."""
        if self.run is None or not rows:
            return

        def action():
            self.run.define_metric(step, summary="none")
            self.run.define_metric(f"{prefix}/*", step_metric=step, summary="none")
            for row in rows:
                self.run.log({step: row[step], **{f"{prefix}/{k}": v for k, v in row.items() if k != step}})

        self._call(action)

    def log_headline(self, values: dict[str, Any]) -> None:
        """The run's headline numbers as one history step (default panels, sweep charts) and summary."""
        scalars = {k: v for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
        if self.run is not None and scalars:
            def action():
                for key in scalars:
                    self.run.define_metric(key)
                self.run.log(scalars)

            self._call(action)

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

    def log_artifact(self, kind: str, paths: list[Path], metadata: dict[str, Any] | None = None, *,
                     detail: str | None = None, aliases: tuple[str, ...] = (), keep_folders: bool = False) -> None:
        """A new version of the collection `<kind>-<model>[-<detail>]` (one collection per kind of
        result and model, so versions stack) holding `paths`. Aliases: what the run is (its name
        without job type and model, the task, the seed) plus `aliases` and `latest`. Metadata: the
        settings, job type, run name, model info and provenance, plus `metadata`. keep_folders:
        files keep their path relative to the run folder (two `grid.json` in different folders)."""
        if self.run is None:
            return
        tags = self.artifact_aliases() + [slug(a) for a in aliases] + ["latest"]
        full = {**self.settings, **self.extra, "job_type": self.job_type, "run_name": self.name, **(metadata or {})}
        self.log_named_artifact(artifact_name(kind, self.settings, detail), kind, paths, tags, full,
                                relative_to=self.out_dir if keep_folders else None)

    def log_named_artifact(self, name: str, kind: str, paths: list[Path], aliases: list[str],
                           metadata: dict[str, Any], relative_to: Path | None = None) -> None:
        """A version of the artifact `name` holding `paths` (a folder is added whole), with exactly
        `aliases`. Files are named by their base name, or by their path below `relative_to`."""
        if self.run is None:
            return

        def action():
            import wandb

            artifact = wandb.Artifact(name, type=kind, metadata=metadata)
            for path in map(Path, paths):
                if path.is_dir():
                    artifact.add_dir(str(path))
                else:
                    artifact.add_file(str(path), name=path.relative_to(relative_to).as_posix() if relative_to else None)
            self.run.log_artifact(artifact, aliases=list(dict.fromkeys(aliases)))

        self._call(action)

    def define_step(self, step: str) -> None:
        """Every history key is plotted against `step` (e.g. `train/step`)."""
        if self.run is not None:
            self._call(lambda: (self.run.define_metric(step), self.run.define_metric("*", step_metric=step)))

    def artifact_aliases(self) -> list[str]:
        """The run's name without job type and model (e.g. `binding-h2-L6-resid_pre-exact-root_value-s0`),
        the task and the seed, as artifact aliases."""
        words = self.identity.name.split(" ")[2:]
        aliases = [slug("-".join(words))] if words else []
        aliases += [slug(str(self.settings["task"]))] if self.settings.get("task") else []
        aliases += [f"seed{self.settings['seed']}"] if self.settings.get("seed") is not None else []
        return [a for a in dict.fromkeys(aliases) if a]

    def fetch_input_artifact(self, name: str, kind: str) -> Path:
        """Download the W&B artifact `name` (e.g. `subspace-smollm2-135m:latest`) as this run's input
        (`use_artifact`: the run's lineage shows it) into `<run folder>/inputs/<kind>`, and record it
        in the config's `inputs`; only an online run can (InputError otherwise, or if W&B fails)."""
        from bindexp.errors import InputError

        if self.run is None or self.mode != "online":
            raise InputError(f"{name!r} is not a local file or folder, and only an online W&B run can fetch an "
                             "artifact by name")
        try:
            artifact = self.run.use_artifact(name)
            path = Path(artifact.download(root=str(self.out_dir / "inputs" / kind)))
        except Exception as err:  # noqa: BLE001 - any W&B failure here is the input missing
            raise InputError(f"could not fetch the W&B artifact {name!r}: {str(err).splitlines()[0]}") from None
        self.update_config({"inputs": {**self.extra.get("inputs", {}),
                                       kind: {"artifact": name, "path": str(path), "digest": input_digest(path)}}})
        return path

    def declare_inputs(self) -> None:
        """A programs file, a local model (a checkpoint directory, a .gguf file) or a subspaces file or
        folder (`subspace_from`) the run reads:
        its path and digest in the config (`inputs`), and with W&B online an input artifact
        (`use_artifact`, a reference to the local path) so the run's lineage shows it. Offline
        runs cannot declare inputs (W&B refuses `use_artifact` offline): the config keeps them."""
        inputs = {}
        programs = self.settings.get("programs_file")
        if programs and Path(programs).is_file():
            inputs["programs"] = Path(programs)
        model = self.settings.get("model")
        if isinstance(model, str) and (Path(model).is_dir() or model.endswith(".gguf")) and Path(model).exists():
            inputs["model"] = Path(model)
        subspace = self.settings.get("subspace_from")
        if isinstance(subspace, str) and Path(subspace).exists():
            inputs["subspace"] = Path(subspace)
        if not inputs:
            return
        described = {kind: {"path": str(path.resolve()), "digest": input_digest(path)} for kind, path in inputs.items()}
        self.update_config({"inputs": described})
        if self.run is None or self.mode != "online":
            return

        def action():
            import wandb

            for kind, path in inputs.items():
                artifact = wandb.Artifact(slug(f"{kind}-{path.stem}"), type="model" if kind == "model" else "dataset",
                                          metadata=described[kind])
                artifact.add_reference(path.resolve().as_uri())
                self.run.use_artifact(artifact)

        self._call(action)

    def write_json(self, name: str, data: Any) -> Path:
        return self.folder.write_json(name, data)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """The run's summary, on disk (summary.json) and in W&B."""
        path = self.folder.write_json(SUMMARY_FILE, summary)
        self.set_summary(summary)
        return path

    def finish(self, exit_code: int = 0) -> None:
        if self._lock is not None:
            self._lock.release()
        if self.run is None:
            print(f"results: {self.out_dir}")
            return
        run_dir, mode = self.run_dir, self.mode
        self._call(lambda: self.run.finish(exit_code=exit_code))
        print(f"results: {self.out_dir}")
        if mode == "offline":
            print(f"W&B run saved offline; upload it with: {wandb_cli_hint()} sync {run_dir}")

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:  # the reason goes into the run, so a sweep's failed runs explain themselves
            reason = f"{exc_type.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            self.set_summary({"error": reason})
            try:
                self.folder.write_json(ERROR_FILE, {"error": reason})
            except OSError:  # a full disk: the exception on its way out says what happened
                pass
        self.finish(exit_code=0 if exc_type is None else 1)


def claim_run_folder(folder: Path, job_type: str, name: str, continues: bool = False) -> FolderLock:
    """Lock a local run folder for this run: refused (one line) while another process writes there,
    and when it holds a finished run already, unless this run `continues` one of the same job type
    (a resumed training)."""
    lock = FolderLock.acquire(folder, "run folder", f"{job_type} run {name!r}")
    existing = RunFolder(folder)
    if existing.is_run() and not (continues and existing.job_type == job_type):
        lock.release()
        raise _taken(existing)
    return lock


def _taken(folder: RunFolder) -> InputError:
    return InputError(f"run folder {folder.path} already holds a run (job {folder.job_type or 'unknown'}); "
                      "choose another --run_name or --output_dir")


def check_run_folder(settings: WandbGroup, continues: str | None = None) -> None:
    """Before any model loads: `output_dir` is writable and, with W&B off and a `run_name` given,
    its folder there holds no run yet (or one of the job type `continues`, e.g. a resumed training)."""
    check_writable_dir(settings.output_dir)
    if settings.run_name and settings.wandb_mode == "disabled":
        folder = RunFolder(Path(settings.output_dir) / settings.run_name)
        if folder.is_run() and not (continues is not None and folder.job_type == continues):
            raise _taken(folder)
