"""Training under faults (issue 22): two writers of one folder (two real processes), a run into
another run's checkpoints, a diverging run, a full and a read-only disk (real small filesystems
where user namespaces allow, else skipped), the leftovers of a kill during a save."""

from __future__ import annotations

import json
import math
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bindexp.io.locks import LOCK_FILE
from bindexp.jobs.train import TrainSettings, run_train
from bindexp.runs.settings import parse_settings

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--n_layers=1", "--d_model=16", "--n_heads=2", "--d_ff=32", "--seq_len=3", "--hops=[1]", "--spacing=compact",
        "--n_eval=8", "--batch_size=4", "--progress=False", "--wandb_mode=disabled", "--warmup_steps=1", "--threads=1"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(*args: str):
    return run_train(parse_settings(TrainSettings, [*TINY, *args]))


def _start(tmp: Path, *args: str) -> subprocess.Popen:
    """scripts/train.py in its own process (a long run unless args say otherwise)."""
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *TINY, *args], cwd=tmp,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *TINY, *args], cwd=tmp,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)


def _holder(lock: Path, timeout: float = 120) -> dict:
    """The lock file's holder once a process has taken it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(lock.read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"nobody took {lock}")


def _one_error(result: subprocess.CompletedProcess) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    return errors[0]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate()


def test_a_second_writer_of_a_checkpoint_dir_is_refused_naming_the_first(tmp_path):
    ck = tmp_path / "ck"
    first = _start(tmp_path, "--steps=100000", "--eval_every=100000", "--checkpoint_every=100000",
                   f"--checkpoint_dir={ck}", f"--output_dir={tmp_path / 'a'}")
    try:
        holder = _holder(ck / LOCK_FILE)
        assert holder["pid"] == first.pid
        second = _run(tmp_path, "--steps=2", f"--checkpoint_dir={ck}", f"--output_dir={tmp_path / 'b'}")
        line = _one_error(second)
        assert f"checkpoint_dir {ck} is in use by another process (pid {first.pid}" in line
        assert not (tmp_path / "b").exists()  # refused before its run folder or W&B run existed
        assert first.poll() is None  # the first goes on
    finally:
        _stop(first)
    # the lock died with its holder (SIGKILL): the folder is free again, for --resume
    resumed = _run(tmp_path, "--steps=2", f"--checkpoint_dir={ck}", f"--output_dir={tmp_path / 'c'}", "--resume=True")
    assert resumed.returncode == 0, resumed.stderr


def test_two_runs_with_one_run_name_never_share_a_folder(tmp_path):
    out = tmp_path / "out"
    first = _start(tmp_path, "--steps=100000", "--eval_every=100000", "--checkpoint_every=100000",
                   "--run_name=same", f"--output_dir={out}", f"--checkpoint_dir={tmp_path / 'ck1'}")
    try:
        _holder(out / "same" / LOCK_FILE)
        second = _run(tmp_path, "--steps=2", "--seed=1", "--run_name=same", f"--output_dir={out}",
                      f"--checkpoint_dir={tmp_path / 'ck2'}")
        line = _one_error(second)
        assert f"is in use by another process (pid {first.pid}" in line or "already holds a run (job train)" in line
        assert json.loads((out / "same" / "config.json").read_text())["settings"]["seed"] == 0
    finally:
        _stop(first)
    # one after the other: the finished run's folder is refused too (eval here: another job)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval.py"), "--model=tiny-random-llama",
                           "--num_programs=2", "--progress=False", "--wandb_mode=disabled", "--run_name=same",
                           f"--output_dir={out}"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert "run folder" in _one_error(done) and "already holds a run (job train)" in _one_error(done)


def test_a_fresh_run_into_finished_checkpoints_is_refused_unless_it_overwrites(tmp_path):
    common = ["--steps=4", "--checkpoint_every=2", f"--checkpoint_dir={tmp_path / 'ck'}"]
    first = _train(*common, f"--output_dir={tmp_path / 'a'}")
    weights = (first.checkpoint / "model.safetensors").read_bytes()
    refused = _run(tmp_path, *common, "--seed=1", f"--output_dir={tmp_path / 'b'}")
    assert "holds another run's checkpoints up to step-000004" in _one_error(refused)
    assert (first.checkpoint / "model.safetensors").read_bytes() == weights and not (tmp_path / "b").exists()
    second = _train(*common, "--seed=1", "--overwrite_checkpoints=True", f"--output_dir={tmp_path / 'c'}")
    assert second.summary["checkpoint"] == str(tmp_path / "ck" / "step-000004")
    assert (second.checkpoint / "model.safetensors").read_bytes() != weights  # seed 1's weights now


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    """A NaN planted in the weights after step 5 (the optimiser step is real; the fault is planted
    so the step is known): the run stops at its next check, records no NaN, and the latest
    checkpoint stays step 4, whose weights are finite."""
    from bindexp.training import trainer as trainer_module

    real_step = trainer_module.train_step
    calls = []

    def poisoned_step(model, *args, **kwargs):
        loss = real_step(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == 5:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return loss

    monkeypatch.setattr(trainer_module, "train_step", poisoned_step)
    main = runpy.run_path(str(ROOT / "scripts" / "train.py"))["main"]
    code = main([*TINY, "--steps=12", "--checkpoint_every=2", "--eval_every=2", "--log_every=2",
                 f"--checkpoint_dir={tmp_path / 'ck'}", f"--output_dir={tmp_path / 'out'}", "--run_name=div"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "training diverged at step 6: the training loss is nan" in errors[0]
    assert f"the last good checkpoint is {tmp_path / 'ck' / 'step-000004'}" in errors[0]
    index = json.loads((tmp_path / "ck" / "checkpoints.json").read_text())
    assert index["latest"] == "step-000004" and not (tmp_path / "ck" / "step-000006").exists()
    weights = load_file(str(tmp_path / "ck" / "step-000004" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    history = [json.loads(line) for line in (tmp_path / "out" / "div" / "history.jsonl").read_text().splitlines()]
    assert max(row["train/step"] for row in history) == 4
    assert all(math.isfinite(v) for row in history for v in row.values() if isinstance(v, float))
    assert not (tmp_path / "out" / "div" / "summary.json").exists()  # no accuracy reported
    assert "training diverged" in json.loads((tmp_path / "out" / "div" / "error.json").read_text())["error"]


def test_a_learning_rate_of_a_million_ends_with_one_line_and_no_nan_recorded(tmp_path):
    result = _run(tmp_path, "--steps=60", "--lr=1e6", "--eval_every=10", "--checkpoint_every=10",
                  "--run_name=big", f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / 'ck'}")
    assert "training diverged at step" in _one_error(result) and result.returncode == 2
    history = tmp_path / "out" / "big" / "history.jsonl"
    rows = [json.loads(line) for line in history.read_text().splitlines()] if history.exists() else []
    assert all(math.isfinite(v) for row in rows for v in row.values() if isinstance(v, float))
    assert not (tmp_path / "out" / "big" / "summary.json").exists()
    for folder in (tmp_path / "ck").glob("step-*"):
        assert all(torch.isfinite(w).all() for w in load_file(str(folder / "model.safetensors")).values())


def test_staging_folders_of_a_killed_save_are_removed_by_the_next_writer(tmp_path):
    ck = tmp_path / "ck"
    _train("--steps=4", "--checkpoint_every=2", f"--checkpoint_dir={ck}", f"--output_dir={tmp_path / 'a'}",
           "--stop_after=3")
    (ck / ".staging-step-000004-abc123" / "trainer").mkdir(parents=True)  # what a kill during a save leaves
    (ck / ".staging-step-000004-abc123" / "model.safetensors").write_bytes(b"half")
    (ck / ".checkpoints.json.tmp").write_text('{"latest": ')
    resumed = _train("--steps=4", "--checkpoint_every=2", f"--checkpoint_dir={ck}", f"--output_dir={tmp_path / 'b'}",
                     "--resume=True")
    assert resumed.summary["completed"]
    assert sorted(p.name for p in ck.iterdir()) == sorted([LOCK_FILE, "checkpoints.json", "step-000002", "step-000004"])


# ---------------------------------------------------------------- real small filesystems

def _namespace_mounts() -> bool:
    """Whether this process may mount a tmpfs in its own user and mount namespace (no root needed)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                            "mount -t tmpfs -o size=64k tmpfs \"$0\"", "/tmp"], capture_output=True, timeout=30)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _namespace_mounts(), reason="cannot mount a tmpfs in a user namespace here")


def _in_namespace(tmp: Path, script: str) -> subprocess.CompletedProcess:
    """`script` (sh) in a private mount namespace, where `$DISK` is a small tmpfs at tmp/disk."""
    (tmp / "disk").mkdir()
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=tmp, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "DISK": str(tmp / "disk"), "PY": sys.executable,
                               "TRAIN": str(ROOT / "scripts" / "train.py"), "TINY": " ".join(TINY)})


@needs_mounts
def test_a_full_disk_during_a_save_ends_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """160 KiB hold one tiny checkpoint (~110 KiB) and its index, not two: the second save fails."""
    result = _in_namespace(tmp_path, """
        mount -t tmpfs -o size=160k tmpfs "$DISK" || exit 90
        "$PY" "$TRAIN" $TINY --steps=3 --checkpoint_every=1 --checkpoint_dir="$DISK/ck" --output_dir=out --run_name=full
        echo "rc=$?" >&2
        cp -r "$DISK/ck" kept
    """)
    assert "rc=4" in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert errors[0].startswith("error: no space left on device writing") and "step-000002" in errors[0]
    kept = tmp_path / "kept"
    assert json.loads((kept / "checkpoints.json").read_text())["latest"] == "step-000001"
    assert sorted(p.name for p in kept.iterdir()) == sorted([LOCK_FILE, "checkpoints.json", "step-000001"])
    from bindexp.models import load_model

    assert load_model(str(kept / "step-000001"), device="cpu").n_layers == 1  # whole and loadable
    assert json.loads((tmp_path / "out" / "full" / "config.json").read_text())["job_type"] == "train"


@needs_mounts
def test_a_read_only_checkpoint_dir_is_refused_before_training(tmp_path):
    result = _in_namespace(tmp_path, """
        mount -t tmpfs -o size=1m,ro tmpfs "$DISK" || exit 90
        "$PY" "$TRAIN" $TINY --steps=3 --checkpoint_dir="$DISK/ck" --output_dir=out
        echo "rc=$?" >&2
        "$PY" "$TRAIN" $TINY --steps=3 --output_dir="$DISK/out"
        echo "rc=$?" >&2
    """)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.stderr.count("rc=2") == 2 and "Traceback" not in result.stderr, result.stderr
    assert "checkpoint_dir" in errors[0] and "not a writable folder: Read-only file system" in errors[0]
    assert "output_dir" in errors[1] and "not a writable folder: Read-only file system" in errors[1]
    assert not (tmp_path / "out").exists()
