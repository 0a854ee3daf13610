"""Run names, tags and scalar config from settings; provenance of the code."""

import subprocess
from pathlib import Path

from bindexp.jobs.evaluate import EvalSettings
from bindexp.jobs.patch import PatchSettings
from bindexp.runs.naming import artifact_name, provenance, run_identity, slug, values_label

ROOT = Path(__file__).resolve().parents[2]


def test_eval_run_is_named_from_what_it_is():
    settings = EvalSettings(model="smollm2-135m", hops=[1, 2, 3, 4], seq_len=[16], seed=0, shots=3)
    identity = run_identity("eval", settings.model_dump(mode="json"), ("mine",))
    assert identity.name == "eval smollm2-135m binding h1-4 L16 s0"
    assert {"eval", "smollm2-135m", "binding", "hops:1-4", "shots:3", "mine"} <= set(identity.tags)
    assert identity.config == {"hops_label": "1-4", "hops_max": 4, "hops_min": 1,
                               "seq_len_label": "16", "seq_len_max": 16, "seq_len_min": 16}


def test_patch_run_is_named_from_what_it_is():
    settings = PatchSettings(model="smollm2-135m", hops=2, seq_len=6, site="resid_pre", method="exact",
                             counterfactual="root_value", seed=0, sweep="smoke")
    identity = run_identity("patch", settings.model_dump(mode="json"))
    assert identity.name == "patch smollm2-135m binding h2 L6 resid_pre exact root_value s0"
    assert {"patch", "exact", "resid_pre", "root_value", "sweep:smoke"} <= set(identity.tags)


def test_knockout_names_no_site_and_counter_no_hops():
    knockout = PatchSettings(model="tiny-random-llama", method="knockout", hops=1, seq_len=5)
    assert "resid_pre" not in run_identity("patch", knockout.model_dump(mode="json")).name
    counter = PatchSettings(model="tiny-random-llama", task="counter", seq_len=5, counterfactual="item_value")
    name = run_identity("patch", counter.model_dump(mode="json")).name
    assert name == "patch tiny-random-llama counter L5 resid_pre exact item_value s0"


def test_labels_and_slugs():
    assert values_label([1, 2, 3]) == "1-3" and values_label([1, 3]) == "1,3" and values_label(2) == "2"
    assert slug("Qwen/Qwen3-0.6B h1,3") == "Qwen-Qwen3-0.6B-h1-3"
    assert artifact_name("patch-grid", {"model": "/tmp/ckpt/step-100"}, "resid_pre") == "patch-grid-step-100-resid_pre"


def test_provenance_reads_this_checkout():
    found = provenance()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:  # not a git checkout: both unknown
        assert found["git_commit"] is None and found["git_dirty"] is None
        return
    import bindexp

    if Path(bindexp.__file__).resolve().parents[1] != ROOT:
        return  # bindexp imported from another checkout than these tests
    assert found["git_commit"] == head.stdout.strip()
    status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
    assert found["git_dirty"] == bool(status.stdout.strip())
    assert found["bindexp_version"] == bindexp.__version__


def test_a_local_sweep_gives_its_runs_a_sweep_identity(monkeypatch):
    from bindexp.sweeps.local import child_env

    env = child_env("smoke-cpu", "offline")
    assert env["BINDEXP_GROUP"] == env["BINDEXP_SWEEP"] == "smoke-cpu"
    monkeypatch.setenv("BINDEXP_SWEEP", env["BINDEXP_SWEEP"])
    settings = EvalSettings()
    assert settings.sweep == "smoke-cpu"
    assert "sweep:smoke-cpu" in run_identity("eval", settings.model_dump(mode="json")).tags


def test_analysis_runs_keep_the_names_they_had_with_the_patch_settings(tmp_path):
    """The analyses no longer carry site and method, but their W&B names and tags still say `resid_pre exact`."""
    from bindexp.jobs.lens import LensSettings
    from bindexp.runs.analysis import NAME_DEFAULTS
    from bindexp.runs.tracking import Tracker

    settings = LensSettings(model="tiny-random-llama", hops=2, seq_len=5, shots=1, wandb_mode="disabled",
                            output_dir=str(tmp_path))
    assert "site" not in settings.model_dump()
    with Tracker(settings, "lens", name_defaults=NAME_DEFAULTS) as tracker:
        assert tracker.name == "lens tiny-random-llama binding h2 L5 resid_pre exact root_value s0"
        assert {"resid_pre", "exact"} <= set(tracker.identity.tags)
