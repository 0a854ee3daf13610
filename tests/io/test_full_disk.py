"""A full disk while a run writes its results (issue 22): the write that fails ends the run with one
line (exit 4), and what was written before stays whole. The disk fills at the lowest write helper the
results go through (`bindexp.io.streams`' `open`), so the failure is the one a real full disk gives
(OSError ENOSPC) at a known row; tests/jobs/test_train_faults.py fills a real small filesystem."""

from __future__ import annotations

import errno
import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

from bindexp.io import folder as folder_module
from bindexp.io import streams

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[2]


def _script(name):
    """scripts/<name>.py as a module (its `main(argv)`)."""
    return SimpleNamespace(**runpy.run_path(str(ROOT / "scripts" / f"{name}.py")))


class _FillingDisk:
    """`open` for appends that fail (ENOSPC, after writing half a line) from the `after`-th one on."""

    def __init__(self, after: int):
        self.after, self.calls = after, 0

    def __call__(self, path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        if "a" not in mode:
            return handle
        self.calls += 1
        if self.calls < self.after:
            return handle
        disk = self

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def writelines(self, lines):
                handle.write(next(iter(lines))[:10])  # part of a line reaches the disk, then it is full
                handle.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

        disk.failed = path
        return Full()


def test_a_full_disk_during_a_results_write_is_one_line_and_keeps_the_rows_before(tmp_path, monkeypatch, capsys):
    disk = _FillingDisk(after=2)
    monkeypatch.setattr(streams, "open", disk, raising=False)
    code = _script("eval").main(["--model=tiny-random-llama", "--hops=[1, 2]", "--seq_len=[4]", "--num_programs=5",
                                 "--progress=False", "--wandb_mode=disabled", f"--output_dir={tmp_path}",
                                 "--run_name=full"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 4 and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0] == (f"error: no space left on device writing {tmp_path / 'full' / 'results.jsonl'}; "
                         "what was written before is kept")
    lines = (tmp_path / "full" / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines[:5]]
    assert [r["hops"] for r in rows] == [1] * 5 and [r["index"] for r in rows] == list(range(5))  # hops 1, whole
    assert len(lines) == 6 and not lines[5].endswith("}")  # the cut line is the one that failed, after them
    assert json.loads((tmp_path / "full" / "config.json").read_text())["job_type"] == "eval"
    assert "OSError" in json.loads((tmp_path / "full" / "error.json").read_text())["error"]


def test_a_file_replaced_on_a_full_disk_keeps_its_old_content(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    target = tmp_path / "run" / "config.json"
    target.write_text('{"job_type": "eval"}')

    def full(self, text, *args, **kwargs):  # half the text reaches the disk, then it is full
        with open(self, "w") as handle:
            handle.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError):
        folder_module.replace_text(target, '{"job_type": "eval", "extra": {}}')
    monkeypatch.undo()
    assert target.read_text() == '{"job_type": "eval"}' and [p.name for p in target.parent.iterdir()] == ["config.json"]
