"""Bad inputs of issue 9 item 17 (the rest): each refused up front with one `error:` line.

Same shape as tests/runs/test_probe_inputs.py: the real script in a subprocess; a non-zero exit,
exactly one `error:` line on stderr, no traceback, and no run folder or output written.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.cli  # the command-line tier: scripts run as a user runs them

ROOT = Path(__file__).resolve().parents[2]
EVAL = ["eval.py", "--model=tiny-random-llama", "--seq_len=[4]", "--num_programs=2", "--progress=False"]
PATCH = ["patch.py", "--model=tiny-random-llama", "--seq_len=5", "--num_programs=2", "--shots=0",
         "--only_correct=False", "--progress=False"]
ROBUST = ["find_robust.py", "--models=[tiny-random-llama]", "--seq_len=[4]", "--num_programs=2", "--progress=False"]


def _tiny_config() -> str:
    from bindexp.models.tiny import tiny_config

    return tiny_config("llama", 100).to_json_string()


def _model_dir(tmp: Path, kind: str) -> Path:
    """A local model directory broken in one way."""
    from safetensors.numpy import save_file

    folder = tmp / f"model-{kind}"
    folder.mkdir()
    (folder / "config.json").write_text("{not json" if kind == "corrupt_config" else _tiny_config())
    if kind == "truncated_safetensors":
        path = folder / "model.safetensors"
        save_file({"weight": np.ones((64, 64), dtype=np.float32)}, str(path))
        path.write_bytes(path.read_bytes()[:5000])
    if kind == "pickle_only":
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")  # never unpickled
    if kind == "corrupt_config":
        save_file({"weight": np.ones(2, dtype=np.float32)}, str(folder / "model.safetensors"))
    return folder


def _probe(tmp_path: Path, argv: list[str]) -> str:
    """Run the script; return the error line after checking the shape of the refusal."""
    out_dir = tmp_path / "out"
    script, *args = argv
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args, "--wandb_mode=offline",
                             *([] if any(a.startswith("--output_dir") for a in args) else [f"--output_dir={out_dir}"])],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not out_dir.exists() and not (tmp_path / "wandb").exists() and not (tmp_path / "outputs").exists()
    assert not list(tmp_path.rglob("offline-run-*")), "a W&B run was created"  # conftest points WANDB_DIR here
    return lines[0]


@pytest.mark.parametrize("script", [EVAL, PATCH, ROBUST], ids=["eval", "patch", "find_robust"])
def test_unwritable_output_dir(tmp_path, script):
    (tmp_path / "a_file").write_text("not a folder")
    line = _probe(tmp_path, script + [f"--output_dir={tmp_path / 'a_file' / 'runs'}"])
    assert "output_dir" in line and "not a writable folder" in line


def test_find_robust_checks_its_out_before_scoring(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    line = _probe(tmp_path, ROBUST + [f"--out={tmp_path / 'a_file' / 'robust.jsonl'}"])
    assert "out" in line and "not a writable folder" in line


@pytest.mark.parametrize("device", ["bogus", ""])
@pytest.mark.parametrize("script", [EVAL, PATCH], ids=["eval", "patch"])
def test_bad_device(tmp_path, script, device):
    assert "device" in _probe(tmp_path, script + [f"--device={device}"])


@pytest.mark.parametrize("kind, fragment", [("corrupt_config", "config.json is not a valid config"),
                                            ("truncated_safetensors", "truncated"),
                                            ("pickle_only", "pickle")])
@pytest.mark.parametrize("script", [EVAL, PATCH], ids=["eval", "patch"])
def test_broken_model_dirs(tmp_path, script, kind, fragment):
    folder = _model_dir(tmp_path, kind)
    args = [a for a in script if not a.startswith("--model")] + [f"--model={folder}"]
    assert fragment in _probe(tmp_path, args)


def test_a_complete_model_dir_passes_the_check(tmp_path):
    from safetensors.numpy import save_file

    from bindexp.models.loading import check_model_dir

    folder = tmp_path / "ok"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"weight": np.ones((3, 3), dtype=np.float32)}, str(folder / "model.safetensors"))
    check_model_dir(folder)
