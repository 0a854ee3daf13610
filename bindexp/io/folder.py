"""Every file a run writes or reads, named once: the run folder.

    folder = RunFolder(tracker.out_dir)
    folder.results                 # <folder>/results.jsonl
    folder.job_type, folder.settings()   # from config.json

A run's folder is the W&B run's files folder when W&B runs, else `<output_dir>/<run name>`.
`Tracker` writes `config.json` first, before any result: the job type (eval, patch, robust,
compare), the settings (`model_dump(mode="json")`) and what the run adds later (`extra`, e.g. the
model's description). Readers go by it, not by which files happen to exist.

A process that starts runs (the local sweep runner) learns where each run's folder is from a
pointer file: it names the file in `$BINDEXP_RUN_POINTER`, and the run's Tracker writes
`{"run_dir": ..., "files_dir": ...}` there as soon as the folder exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from bindexp import __version__
from bindexp.io.grids import GRID_ARRAYS, GRID_SIDECAR

CONFIG_FILE = "config.json"  # every job: {"job_type", "settings", "extra", "bindexp_version"}
SUMMARY_FILE = "summary.json"  # every job: the run's summary (the same values as W&B's)
ERROR_FILE = "error.json"  # a run that raised: {"error": "<type>: <first line>"}
RESULTS_FILE = "results.jsonl"  # eval: one JSON object per program
ACCURACY_PLOT_FILE = "accuracy.png"  # eval
PAIRS_FILE = "pairs.jsonl"  # patch: every pair's own values
HEATMAP_FILE = "heatmap.png"  # patch
ATP_VERIFY_FILE = "atp_verify.csv"  # patch with method=atp and verify_top_k
ROBUST_FILE = "robust_programs.jsonl"  # robust: one program per line
OVER_TRAINING_TABLE_FILE = "over_training.csv"  # over_training: step, role, layer, metric, value, ci_low, ci_high, n
TRAINING_PLOT_FILE = "training.png"  # train: the history (accuracies, loss) against the step, phase lines
OVER_TRAINING_PLOT_FILE = "over_training.png"  # over_training: the metric against the training step per role
HISTORY_FILE = "history.jsonl"  # train: one JSON object per logged step (losses, evaluations)
ROUTES_OVER_TRAINING_TABLE_FILE = "routes_over_training.csv"  # over_training: step, route, layer, head, attention ...
ROUTES_OVER_TRAINING_PLOT_FILE = "routes_over_training.png"  # over_training: each route's attention against the step
CHECKPOINT_RUNS_DIR = "checkpoint_runs"  # over_training: one patch run folder per checkpoint, step-NNNNNN/
# the analysis jobs (attention, lens, subspace, locate): grids in grids/<name>/, tables as CSV
ANALYSIS_GRIDS_DIR = "grids"  # <folder>/grids/<destination or variable>/grid.safetensors + grid.json
ROUTING_FILE = "routing_heads.csv"  # attention
ATTENTION_HEATMAP_FILE = "attention_{destination}.png"  # attention: layer x head panels per source role
ATTENTION_CELLS_FILE = "attention_cells.csv"  # attention: every (destination, layer, role, head) cell
LENS_CELLS_FILE = "lens_cells.csv"  # lens: every (layer, role) cell
LENS_CURVE_FILE = "lens_final.png"  # lens: the final token's curve over layers
SUBSPACE_FILE = "subspace.csv"  # subspace: held-out IIA per method and k
ROTATIONS_FILE = "das_rotations.safetensors"  # subspace: tensor "k<k>" per k (R[:k] spans the subspace)
PROBE_BASIS_FILE = "probe_basis.safetensors"  # subspace: the PCA + probe basis
SUBSPACES_FILE = "subspaces.safetensors"  # subspace: every learned subspace's rows + metadata (bindexp.io.subspaces)
SUBSPACE_FIGURE_FILE = "subspace_iia.png"  # subspace: held-out IIA against k, learned subspaces beside their controls
TRAIN_PAIRS_FILE = "train_pairs.jsonl"  # subspace
HELDOUT_PAIRS_FILE = "heldout_pairs.jsonl"  # subspace
LOCATE_FILE = "locate.csv"  # locate: variable -> where
LOCATE_CELLS_FILE = "locate_cells.csv"  # locate: every (variable, layer, role) cell
LOCATE_HEATMAP_FILE = "locate_iia.png"  # locate: IIA heatmap per variable
DAS_CURVE_FILE = "das_loss.png"  # subspace: training loss per k
CAUSAL_MODEL_FILE = "causal_model.json"  # locate: the declared hypothesis
PATH_PATCH_FILE = "path_patch.csv"  # path_patch: every (receiver set, sender) cell
PATH_PATCH_HEATMAP_FILE = "path_patch_{receivers}.png"  # path_patch: layer x sender heatmap per receiver set
EDGES_FILE = "edges.csv"  # circuit: every edge's score, its exact value where checked, whether in the circuit
EDGE_VERIFY_FILE = "edge_verify.csv"  # circuit: the edges checked by exact path patching, side by side
CIRCUIT_FILE = "circuit.json"  # circuit: the graph (nodes, the circuit's edges with scores, faithfulness)
CIRCUIT_FIGURE_FILE = "circuit.png"  # circuit: the circuit over the model's layers
FAITHFULNESS_FILE = "faithfulness.csv"  # circuit: circuit and complement, mean with interval and n
MINIMALITY_FILE = "minimality.csv"  # circuit: per edge, the faithfulness lost without it
HYPOTHESES_FILE = "hypotheses.json"  # hypotheses: every hypothesis's declaration (variables, sites, kinds)
HYPOTHESES_CELLS_FILE = "hypotheses_cells.csv"  # hypotheses: IIA per kind x hypothesis x variable x cell
VERDICTS_FILE = "verdicts.csv"  # hypotheses: per kind x cell, each hypothesis's decision and the verdict
VERDICT_REGIONS_FILE = "verdict_regions.csv"  # hypotheses: the verdicts as layer ranges per (kind, role)
VERDICTS_FIGURE_FILE = "verdicts.png"  # hypotheses: a layer x role verdict panel per kind
# a comparison's folder (scripts/compare.py --out)
LEFT_OUT_FILE = "left_out.csv"  # runs not counted and why
TIDY_FILE = "tidy.csv"  # one row per eval run x hops x seq_len
AGGREGATE_FILE = "aggregate.csv"  # the mean over seeds (and aggregate.md, the same as markdown)
AGGREGATE_MD_FILE = "aggregate.md"
PATCH_DIR = "patch"  # averaged grids, patch/<key>/grid.safetensors + grid.json + heatmap.png
PATCH_CELLS_FILE = "patch_cells.csv"  # every averaged grid's cells
TRAIN_RUNS_FILE = "train_runs.csv"  # one row per training run: settings, steps, phases, final metrics
TRAIN_AGGREGATE_FILE = "train_aggregate.csv"  # training runs' final metrics and phases over seeds
TRAINING_COMPARE_PLOT_FILE = "training_by_hops.png"  # validation accuracy by hops over training, mean and band
SCALARS_FILE = "analysis_scalars.csv"  # every numeric summary value of the analysis runs
ANALYSIS_AGGREGATE_FILE = "analysis_aggregate.csv"  # their mean over seeds
POINTER_ENV = "BINDEXP_RUN_POINTER"


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """A run's folder and the paths of its files."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def error(self) -> Path:
        return self.path / ERROR_FILE

    @property
    def results(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def accuracy_plot(self) -> Path:
        return self.path / ACCURACY_PLOT_FILE

    @property
    def pairs(self) -> Path:
        return self.path / PAIRS_FILE

    @property
    def heatmap(self) -> Path:
        return self.path / HEATMAP_FILE

    @property
    def grid_arrays(self) -> Path:
        return self.path / GRID_ARRAYS

    @property
    def grid_sidecar(self) -> Path:
        return self.path / GRID_SIDECAR

    @property
    def atp_verify(self) -> Path:
        return self.path / ATP_VERIFY_FILE

    @property
    def robust(self) -> Path:
        return self.path / ROBUST_FILE

    @property
    def over_training_table(self) -> Path:
        return self.path / OVER_TRAINING_TABLE_FILE

    @property
    def history(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def training_plot(self) -> Path:
        return self.path / TRAINING_PLOT_FILE

    @property
    def over_training_plot(self) -> Path:
        return self.path / OVER_TRAINING_PLOT_FILE

    @property
    def routes_over_training_table(self) -> Path:
        return self.path / ROUTES_OVER_TRAINING_TABLE_FILE

    @property
    def routes_over_training_plot(self) -> Path:
        return self.path / ROUTES_OVER_TRAINING_PLOT_FILE

    @property
    def checkpoint_runs(self) -> Path:
        """The folder holding a patch run folder per analysed checkpoint (`step-NNNNNN/`)."""
        return self.path / CHECKPOINT_RUNS_DIR

    def analysis_grid(self, name: str) -> Path:
        """The folder of an analysis run's grid `name` (a destination, a variable)."""
        return self.path / ANALYSIS_GRIDS_DIR / name

    def file(self, name: str) -> Path:
        """<folder>/<name>, for one of this module's file names."""
        return self.path / name

    def is_run(self) -> bool:
        """Whether a run (of any job, or an older run without config.json) wrote this folder."""
        return any(p.is_file() for p in (self.config, self.summary, self.grid_sidecar))

    def write_json(self, name: str, data: Any) -> Path:
        """Write `data` as `<folder>/<name>` (replaced whole: a full disk leaves the old file); returns the path."""
        return replace_text(self.path / name, json.dumps(data, indent=2, default=str))

    def read_json(self, name: str) -> Any:
        """The JSON in `<folder>/<name>`, or None when it is missing or unreadable."""
        try:
            return json.loads((self.path / name).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_config(self, job_type: str, settings: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
        return self.write_json(CONFIG_FILE, {"job_type": job_type, "settings": settings, "extra": extra or {},
                                             "bindexp_version": __version__})

    def add_to_config(self, values: dict[str, Any]) -> None:
        """Merge `values` into config.json's `extra` (what the run learns after it starts)."""
        config = self._config()
        if config is not None:
            config["extra"] = {**config.get("extra", {}), **values}
            self.write_json(CONFIG_FILE, config)

    def config_problem(self) -> str | None:
        """Why config.json cannot be read as a run's config (None: it can, or there is none)."""
        if not self.config.is_file():
            return None
        config = self.read_json(CONFIG_FILE)
        if config is None:
            return f"{CONFIG_FILE}: not valid JSON (truncated?)"
        if not isinstance(config, dict):
            return f"{CONFIG_FILE}: not a run's config (a JSON object with job_type, settings, extra)"
        for key, kind in (("job_type", str), ("settings", dict), ("extra", dict)):
            if key in config and not isinstance(config[key], kind):
                return f"{CONFIG_FILE}: {key} is not a {'string' if kind is str else 'JSON object'}"
        return None

    def _config(self) -> dict[str, Any] | None:
        return None if self.config_problem() is not None else self.read_json(CONFIG_FILE)

    @property
    def job_type(self) -> str | None:
        """The job that wrote this folder, from config.json (None without a readable one)."""
        return (self._config() or {}).get("job_type")

    def settings(self) -> dict[str, Any] | None:
        """The run's settings and extras as one dict (W&B's config shape), None without a readable config.json."""
        config = self._config()
        return None if config is None else {**config.get("settings", {}), **config.get("extra", {})}


def replace_text(path: Path, text: str) -> Path:
    """Write `text` as `path` atomically: into a hidden staging file beside it, then renamed over it.
    A kill or a full disk leaves the previous file as it was (and no staging file); returns the path."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.tmp")
    try:
        staging.write_text(text)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return path


def announce(run_dir: Path, files_dir: Path) -> None:
    """Tell the process that started this one where the run is, if it asked (see the module doc)."""
    target = os.environ.get(POINTER_ENV)
    if target:
        Path(target).write_text(json.dumps({"run_dir": str(run_dir.absolute()),
                                            "files_dir": str(files_dir.absolute())}))


def read_pointer(path: Path) -> dict[str, str] | None:
    """What a run announced in the pointer file `path`: {"run_dir", "files_dir"}, or None."""
    try:
        pointer = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return pointer if isinstance(pointer, dict) else None


def check_writable_dir(path: str | Path, what: str = "output_dir") -> None:
    """Raise InputError (one line) unless `path` is a folder this process can write to, or could
    be made in one: a temporary file is created and removed in it (or in its nearest existing
    parent, when it does not exist yet; nothing is left behind)."""
    import tempfile

    from bindexp.errors import InputError

    folder = Path(path).absolute()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise InputError(f"{what} {str(path)!r} is not a writable folder: {existing} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".bindexp-write-check-"):
            pass
    except OSError as err:
        raise InputError(f"{what} {str(path)!r} is not a writable folder: {err.strerror or err}") from None
