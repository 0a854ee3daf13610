"""The run folder: config.json first in every run, readers go by it, and runs say where they are."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bindexp.io.folder import POINTER_ENV, RunFolder, announce, read_pointer
from bindexp.jobs.evaluate import EvalSettings
from bindexp.jobs.patch import PatchSettings
from bindexp.results.records import local_records, read_plain_folder
from bindexp.runs.tracking import Tracker


def test_every_run_starts_with_config_json_holding_job_type_and_settings(tmp_path):
    settings = PatchSettings(wandb_mode="disabled", output_dir=str(tmp_path), run_name="p", seed=7, hops=2)
    with Tracker(settings, "patch") as tracker:
        written = json.loads((tmp_path / "p" / "config.json").read_text())  # before any result
        tracker.update_config({"model_info": {"n_layers": 4}})
    assert written["job_type"] == "patch"
    assert written["settings"]["seed"] == 7 and written["settings"]["hops"] == 2
    assert written["settings"]["site"] == "resid_pre" and written["settings"]["run_name"] == "p"
    after = json.loads((tmp_path / "p" / "config.json").read_text())
    assert after["extra"]["model_info"] == {"n_layers": 4} and after["settings"] == written["settings"]
    assert set(after["extra"]["provenance"]) == {"bindexp_version", "git_commit", "git_dirty"}  # from the start
    assert written["extra"]["provenance"] == after["extra"]["provenance"]


def test_a_run_that_fails_still_has_its_config_and_its_error(tmp_path):
    settings = EvalSettings(wandb_mode="disabled", output_dir=str(tmp_path), run_name="bad")
    with pytest.raises(RuntimeError):
        with Tracker(settings, "eval"):
            raise RuntimeError("boom")
    record = read_plain_folder(tmp_path / "bad")
    assert record.job_type == "eval" and record.problem == "failed: RuntimeError: boom"


def test_records_take_the_job_type_from_config_json_not_from_the_files_present(tmp_path):
    """A patch run that wrote a summary but no grid (yet) is still a patch run."""
    with Tracker(PatchSettings(wandb_mode="disabled", output_dir=str(tmp_path), run_name="p", group="g"),
                 "patch") as tracker:
        tracker.write_summary({"metric": "normalized_effect"})
    record = read_plain_folder(tmp_path / "p")
    assert record.job_type == "patch" and record.group == "g" and record.config["site"] == "resid_pre"
    assert [r.job_type for r in local_records(tmp_path)] == ["patch"]


def test_folders_from_before_config_json_are_still_read(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"accuracy": 0.5}))
    (folder / "results.jsonl").write_text(json.dumps({"model": "m", "task": "binding", "seed": 3, "shots": 0,
                                                      "hops": 1, "seq_len": 4, "correct": True}) + "\n")
    record = read_plain_folder(folder)
    assert record.job_type == "eval" and record.config["seed"] == 3 and record.config["seq_len"] == [4]


def test_paths_of_a_run_folder(tmp_path):
    folder = RunFolder(tmp_path)
    names = {folder.config: "config.json", folder.results: "results.jsonl", folder.summary: "summary.json",
             folder.grid_arrays: "grid.safetensors", folder.grid_sidecar: "grid.json", folder.pairs: "pairs.jsonl",
             folder.heatmap: "heatmap.png", folder.accuracy_plot: "accuracy.png", folder.error: "error.json",
             folder.training_plot: "training.png"}
    assert all(path == tmp_path / name for path, name in names.items())
    assert not folder.is_run() and folder.job_type is None and folder.settings() is None


def test_announce_writes_the_pointer_only_when_asked(tmp_path, monkeypatch):
    pointer = tmp_path / "where.json"
    announce(tmp_path / "run", tmp_path / "run" / "files")
    assert not pointer.exists()
    monkeypatch.setenv(POINTER_ENV, str(pointer))
    announce(tmp_path / "run", tmp_path / "run" / "files")
    assert read_pointer(pointer) == {"run_dir": str(tmp_path / "run"), "files_dir": str(tmp_path / "run" / "files")}
    assert read_pointer(tmp_path / "missing.json") is None


CHILD = """
import sys
from bindexp.runs.cli import run_cli
from bindexp.jobs.evaluate import EvalSettings
from bindexp.runs.tracking import Tracker

def runner(settings):
    with Tracker(settings, "eval") as tracker:
        tracker.write_summary({"accuracy": 1.0})

raise SystemExit(run_cli(EvalSettings, runner, sys.argv[1:]))
"""


def test_a_tracker_in_a_child_process_tells_its_parent_where_its_folder_is(tmp_path):
    pointer = tmp_path / "where.json"
    env = {**os.environ, POINTER_ENV: str(pointer)}
    for mode in ("disabled", "offline"):
        pointer.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-c", CHILD, f"--wandb_mode={mode}", f"--output_dir={tmp_path / 'out'}"],
                       env=env, cwd=tmp_path, check=True, capture_output=True, timeout=300)
        where = read_pointer(pointer)
        files = Path(where["files_dir"])
        assert RunFolder(files).job_type == "eval" and (files / "summary.json").is_file()
        if mode == "disabled":
            assert where["run_dir"] == where["files_dir"] and files.parent == tmp_path / "out"
        else:  # the W&B run folder, what `wandb sync` takes
            assert files == Path(where["run_dir"]) / "files" and list(Path(where["run_dir"]).glob("*.wandb"))
