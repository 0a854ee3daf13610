"""W&B tracking: offline without a key, disabled with no W&B, failures never lose results."""

import pandas as pd

from bindexp.runs.settings import EvalSettings
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
