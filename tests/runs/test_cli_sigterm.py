"""A preempted run (slurm sends SIGTERM): the run records why it ended, keeps what it finished, exits non-zero."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cli  # the command-line tier: scripts run as a user runs them

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_during_an_eval_run_records_the_error_and_keeps_finished_rows(tmp_path):
    lengths = list(range(4, 16))
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "scripts" / "eval.py"), "--model=tiny-random-llama", "--hops=[1, 2]",
               f"--seq_len={lengths}", "--num_programs=40", "--progress=False", "--wandb_mode=disabled",
               f"--output_dir={out}", "--run_name=preempted"]
    results = out / "preempted" / "results.jsonl"
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while (not results.exists() or not results.read_text().strip()) and time.time() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: terminated (SIGTERM)"] and "Traceback" not in stderr, stderr
    assert json.loads((out / "preempted" / "error.json").read_text())["error"] == "Terminated: terminated (SIGTERM)"
    rows = [json.loads(line) for line in results.read_text().splitlines()]  # complete lines only
    assert 0 < len(rows) < 2 * len(lengths) * 40
    assert not (out / "preempted" / "summary.json").exists()  # no summary claims a finished run
