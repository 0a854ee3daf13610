"""README snippets marked `<!-- test: tiny -->` run as written, with tiny-random-llama for smollm2-135m."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cli  # the command-line tier: scripts run as a user runs them

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- test: tiny -->"


def marked_snippets(text: str) -> list[str]:
    """The python blocks that come right after the marker (blank lines allowed between)."""
    return re.findall(re.escape(MARK) + r"\s*```python\n(.*?)```", text, flags=re.S)


def test_the_readme_marks_at_least_one_snippet():
    assert len(marked_snippets((ROOT / "README.md").read_text())) >= 1


def test_marker_extraction_takes_only_marked_blocks():
    text = f"```python\nx = 1\n```\n{MARK}\n```python\ny = 2\n```\n"
    assert marked_snippets(text) == ["y = 2\n"]


@pytest.mark.parametrize("index", range(len(marked_snippets((ROOT / "README.md").read_text()))))
def test_readme_snippet_runs_on_the_tiny_model(index, tmp_path):
    code = marked_snippets((ROOT / "README.md").read_text())[index].replace('"smollm2-135m"', '"tiny-random-llama"')
    script = tmp_path / f"snippet_{index}.py"  # a file: nnsight cannot trace code read from stdin
    script.write_text(code)
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
