"""Bad input to scripts/train.py (issue 22): hostile checkpoint indexes, damaged checkpoint files
on --resume, folders it cannot write, run names that are paths, optimiser settings out of range.

Same shape as tests/runs/test_probe_inputs.py, whose one-interpreter batch runs the rows: each row
expects a non-zero exit, exactly one `error:` line naming what is wrong, no traceback, and its
folder exactly as it was (every file's bytes; the lock file inside a checkpoint folder may be
re-taken), so nothing outside the folders a run owns is written or deleted, and nothing already
written is lost. `{tmp}` is the row's folder; `{ck}` a copy of a finished tiny training run's
checkpoint folder there (4 steps, checkpoints at 2 and 4).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from test_probe_inputs import _BATCH

from bindexp.io.locks import LOCK_FILE

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--n_layers=1", "--d_model=16", "--n_heads=2", "--d_ff=32", "--seq_len=3", "--hops=[1]", "--spacing=compact",
        "--n_eval=8", "--batch_size=4", "--progress=False", "--wandb_mode=disabled", "--warmup_steps=1", "--threads=1",
        "--steps=4", "--checkpoint_every=2"]
TRAIN = ["train.py", *TINY, "--output_dir={tmp}/out"]
RESUME = [*TRAIN, "--checkpoint_dir={tmp}/ck", "--resume=True"]


class Probe(NamedTuple):
    name: str
    argv: list[str]
    setup: Callable[[Path], None] | None
    says: str


_TEMPLATE: list[Path] = []


def _checkpoints(tmp: Path) -> Path:
    """A copy of one finished tiny training run's checkpoint folder, as `tmp/ck` (trained once)."""
    if not _TEMPLATE:
        from bindexp.jobs.train import TrainSettings, run_train
        from bindexp.runs.settings import parse_settings

        made = Path(tmp).parent / "template"
        args = [a.replace("{tmp}", str(made)) for a in TRAIN[1:]] + [f"--checkpoint_dir={made / 'ck'}"]
        run_train(parse_settings(TrainSettings, args))
        _TEMPLATE.append(made / "ck")
    shutil.copytree(_TEMPLATE[0], tmp / "ck")
    return tmp / "ck"


def _index(tmp: Path, **changes) -> None:
    ck = _checkpoints(tmp)
    index = json.loads((ck / "checkpoints.json").read_text())
    (ck / "checkpoints.json").write_text(json.dumps({**index, **changes}))


def _other_folder(tmp: Path) -> None:
    """A folder beside the checkpoints that a hostile index names: it must survive."""
    (tmp / "other").mkdir()
    (tmp / "other" / "precious.txt").write_text("keep me")


def _steps_outside(tmp: Path) -> None:
    _other_folder(tmp)
    _index(tmp, steps=["../other", "step-000002", "step-000004"])


def _latest_outside(tmp: Path) -> None:
    _other_folder(tmp)
    _index(tmp, latest=str(tmp / "other"))


def _damage(relative: str, how: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = _checkpoints(tmp) / relative
        data = path.read_bytes()
        path.write_bytes({"cut": data[: len(data) // 2], "junk": b"not a safetensors file at all"}.get(how, b""))
        if how == "list":
            path.write_text("[1, 2]")
    return setup


def _rng_without_cpu(tmp: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"gpu": torch.zeros(3)}, str(_checkpoints(tmp) / "step-000004" / "trainer" / "rng.safetensors"))


def _pickle_only(tmp: Path) -> None:
    folder = _checkpoints(tmp) / "step-000004"
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04never unpickled")


def _a_file(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_text("a file, not a folder\n")


PROBES = [
    # optimiser settings: refused before anything starts
    Probe("lr=inf", [*TRAIN, "--lr=inf"], None, "lr: Input should be a finite number"),
    Probe("lr=nan", [*TRAIN, "--lr=nan"], None, "lr: Input should be a finite number"),
    Probe("beta1=2", [*TRAIN, "--beta1=2"], None, "beta1: Input should be less than 1"),
    Probe("beta2=-0.1", [*TRAIN, "--beta2=-0.1"], None, "beta2: Input should be greater than or equal to 0"),
    Probe("weight_decay=inf", [*TRAIN, "--weight_decay=inf"], None, "weight_decay: Input should be a finite number"),
    # run names are names, never paths
    Probe("run_name ../../x", [*TRAIN, "--run_name=../../x"], None, "is not a plain name"),
    Probe("absolute run_name", [*TRAIN, "--run_name={tmp}/x"], None, "is not a plain name"),
    # a checkpoint index names folders beside it, never paths
    Probe("index steps list ../other (fresh run)", [*TRAIN, "--checkpoint_dir={tmp}/ck", "--keep_checkpoints=1"],
          _steps_outside, "checkpoints.json: steps entry '../other' is not a checkpoint name"),
    Probe("index steps list ../other (resume)", [*RESUME, "--keep_checkpoints=1"], _steps_outside,
          "checkpoints.json: steps entry '../other' is not a checkpoint name"),
    Probe("index latest outside", RESUME, _latest_outside, "checkpoints.json: latest entry"),
    Probe("index latest not among its steps", RESUME, lambda tmp: _index(tmp, latest="step-000006"),
          "checkpoints.json: latest is 'step-000006', which its steps do not list"),
    # damaged checkpoint files on --resume: one line naming the file
    Probe("index cut", RESUME, _damage("checkpoints.json", "cut"), "checkpoints.json: not a readable checkpoint index"),
    Probe("trainer state cut", RESUME, _damage("step-000004/trainer/state.json", "cut"),
          "state.json: not a readable trainer state"),
    Probe("trainer state of the wrong shape", RESUME, _damage("step-000004/trainer/state.json", "list"),
          "state.json: not a trainer state"),
    Probe("weights cut", RESUME, _damage("step-000004/model.safetensors", "cut"), "model.safetensors is truncated"),
    Probe("optimizer junk", RESUME, _damage("step-000004/trainer/optimizer.safetensors", "junk"),
          "optimizer.safetensors: not a readable safetensors file"),
    Probe("RNG without a CPU state", RESUME, _rng_without_cpu, "rng.safetensors: holds no CPU generator state"),
    Probe("pickle-only weights", RESUME, _pickle_only, "holds only pickle weights"),
    # a fresh run into a folder holding another run's checkpoints
    Probe("fresh run into finished checkpoints", [*TRAIN, "--checkpoint_dir={tmp}/ck"], _checkpoints,
          "holds another run's checkpoints up to step-000004; continue it with --resume=True"),
    # folders it cannot write, found before training
    Probe("checkpoint_dir is a file", [*TRAIN, "--checkpoint_dir={tmp}/file"], _a_file("file"),
          "checkpoint_dir"),
    Probe("checkpoint_dir under a file", [*TRAIN, "--checkpoint_dir={tmp}/file/ck"], _a_file("file"),
          "is not a folder"),
    Probe("output_dir under a file", ["train.py", *TINY, "--output_dir={tmp}/file/out"], _a_file("file"),
          "output_dir"),
]


def _tree(folder: Path) -> dict[str, str]:
    """Every file's sha256 by path (the lock file: present, its content aside)."""
    return {str(p.relative_to(folder)): ("lock" if p.name == LOCK_FILE else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Path, dict[str, str], dict]]:
    rows, folders = [], {}
    for probe in PROBES:
        tmp = tmp_path_factory.mktemp("probe")
        if probe.setup is not None:
            probe.setup(tmp)
        folders[probe.name] = (tmp, _tree(tmp))
        script, *args = [arg.replace("{tmp}", str(tmp)) for arg in probe.argv]
        rows.append({"script": str(ROOT / "scripts" / script), "argv": args, "cwd": str(tmp)})
    done = subprocess.run([sys.executable, "-c", _BATCH], input=json.dumps(rows), capture_output=True, text=True,
                          timeout=600)
    found = [x for x in done.stdout.splitlines() if x.startswith("PROBE-RESULTS ")]
    assert len(found) == 1, done.stderr
    results = json.loads(found[0].removeprefix("PROBE-RESULTS "))
    return {probe.name: (*folders[probe.name], result) for probe, result in zip(PROBES, results)}


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_bad_training_input_is_one_error_line_and_changes_nothing(probe, outcomes):
    tmp, before, result = outcomes[probe.name]
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert result["rc"] != 0, result["stderr"]
    assert "Traceback" not in result["stderr"], result["stderr"]
    assert len(errors) == 1 and probe.says in errors[0], result["stderr"]
    assert _tree(tmp) == before, "the run wrote or deleted something"
    assert not (tmp.parent / "x").exists()
