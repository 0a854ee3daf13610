"""W&B tracking: offline without a key, disabled with no W&B, failures never lose results."""

import pandas as pd

from bindexp.jobs.evaluate import EvalSettings
from bindexp.runs.tracking import Tracker, resolve_wandb_mode


def test_no_api_key_means_offline(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    assert resolve_wandb_mode(None) == "offline"
    assert resolve_wandb_mode("disabled") == "disabled"


def test_disabled_writes_only_locally(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = EvalSettings(wandb_mode="disabled", output_dir=str(tmp_path / "out"), run_name="r1")
    with Tracker(settings, "eval") as tracker:
        tracker.write_json("summary.json", {"accuracy": 0.5})
        tracker.log_table("t", pd.DataFrame({"a": [1]}))  # no-op without a run
    assert (tmp_path / "out" / "r1" / "summary.json").exists()
    assert not (tmp_path / "wandb").exists()


def test_wandb_failure_mid_run_keeps_results(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    settings = EvalSettings(wandb_mode="offline")
    with Tracker(settings, "eval") as tracker:
        tracker.write_json("before.json", {"x": 1})
        tracker.log_table("bad", "not a dataframe")  # W&B raises inside
        tracker.log_artifact("eval-results", [tmp_path / "missing.file"], {})  # and again
        tracker.write_json("after.json", {"x": 2})
        out_dir = tracker.out_dir
    assert (out_dir / "before.json").exists() and (out_dir / "after.json").exists()
    assert capsys.readouterr().err.count("warning: W&B call failed") == 1


def test_wandb_mode_environment_variable_is_respected(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode(None) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode(None) == "offline"
    assert resolve_wandb_mode("online") == "online"  # an explicit setting wins


def test_settings_that_are_not_run_settings_need_an_explicit_destination(tmp_path):
    import json

    import pytest

    from bindexp.results.compare import CompareSettings
    from bindexp.runs.tracking import Destination

    settings = CompareSettings(group="g", out=str(tmp_path / "cmp"))
    with pytest.raises(TypeError, match="destination"):
        Tracker(settings, "compare")
    with Tracker(settings, "compare", destination=Destination(wandb_mode="disabled", output_dir=str(tmp_path),
                                                             run_name="c")) as tracker:
        assert tracker.out_dir == tmp_path / "c"
    written = json.loads((tmp_path / "c" / "config.json").read_text())
    assert written["job_type"] == "compare" and written["settings"]["group"] == "g"


# ---------------------------------------------------------------- what a W&B user sees (issue 13 items 1-4)

def _records(run_dir):
    """Every record of an offline run's .wandb log, as `wandb leet inspect --json` prints them."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json", str(run_dir)],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _of(records, kind):
    return [r[kind] for r in records if r.get("type") == kind]


def _history_keys(records):
    return {key for item in _of(records, "history") for key in item["item"] if not key.startswith("_")}


def test_eval_run_has_name_tags_history_artifact_and_provenance(tmp_path, monkeypatch):
    import json

    from bindexp.jobs.evaluate import run_eval

    monkeypatch.chdir(tmp_path)
    outcome = run_eval(EvalSettings(model="tiny-random-llama", hops=[1, 2], seq_len=[5], num_programs=4, shots=1,
                                    seed=2, progress=False, wandb_mode="offline", sweep="sw"))
    records = _records(outcome.run_dir)
    (run,) = _of(records, "run")
    assert run["display_name"] == "eval tiny-random-llama binding h1,2 L5 s2"
    assert {"eval", "tiny-random-llama", "binding", "hops:1,2", "shots:1", "sweep:sw"} <= set(run["tags"])
    assert run["run_group"] == "sw"
    config = run["config"]["update"]
    assert config["hops_max"] == 2 and config["hops_label"] == "1,2" and config["sweep"] == "sw"
    assert config["provenance"]["bindexp_version"] and "git_dirty" in config["provenance"]
    metrics = {m.get("name") or m.get("glob_name"): m for m in _of(records, "metric")}
    assert metrics["by_hops/*"]["step_metric"] == "hops" and metrics["by_seq_len/*"]["step_metric"] == "seq_len"
    assert {"accuracy", "hops", "by_hops/accuracy", "by_hops/ci_low", "by_hops/n", "seq_len"} <= _history_keys(records)
    steps = [item["item"] for item in _of(records, "history") if "by_hops/accuracy" in item["item"]]
    assert sorted(step["hops"] for step in steps) == [1, 2]
    results = outcome.results
    for step in steps:
        assert step["by_hops/accuracy"] == results[results["hops"] == step["hops"]]["correct"].mean()
    (artifact,) = [a for a in _of(records, "artifact") if a["type"] == "eval-results"]  # tables are artifacts too
    assert artifact["name"] == "eval-results-tiny-random-llama" and artifact["type"] == "eval-results"
    assert {"binding-h1-2-L5-s2", "binding", "seed2", "latest"} <= set(artifact["aliases"])
    metadata = json.loads(artifact["metadata"])
    assert metadata["model_info"]["revision"] == "random-init-seed0" and metadata["run_name"] == run["display_name"]
    assert metadata["provenance"]["bindexp_version"] and "git_dirty" in metadata["provenance"]
    written = json.loads((outcome.out_dir / "config.json").read_text())
    assert written["extra"]["provenance"] == metadata["provenance"] and written["extra"]["hops_label"] == "1,2"


def test_a_programs_file_is_declared_as_an_input(tmp_path, monkeypatch):
    import hashlib
    import json

    from bindexp.jobs.patch import PatchSettings

    monkeypatch.chdir(tmp_path)
    programs = tmp_path / "robust.jsonl"
    programs.write_text("{}\n")
    settings = PatchSettings(model="tiny-random-llama", programs_file=str(programs), wandb_mode="offline")
    with Tracker(settings, "patch") as tracker:
        out_dir = tracker.out_dir
    inputs = json.loads((out_dir / "config.json").read_text())["extra"]["inputs"]
    assert inputs["programs"]["path"] == str(programs.resolve())
    assert inputs["programs"]["digest"] == "sha256:" + hashlib.sha256(b"{}\n").hexdigest()[:16]


def test_the_sync_hint_names_the_environments_wandb(tmp_path, monkeypatch, capsys):
    import sys
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    with Tracker(EvalSettings(wandb_mode="offline"), "eval"):
        pass
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "upload it with" in x]
    assert f"{Path(sys.executable).with_name('wandb')} sync " in line
