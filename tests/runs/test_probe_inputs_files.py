"""Bad input files (issue 22) through the real command lines: for scripts/train.py hostile checkpoint
indexes, damaged checkpoint files on --resume, folders it cannot write, run names that are paths,
optimiser settings out of range; for the runs that load a model, prompts longer than a trained
checkpoint's positions (GPT-2's n_positions, Llama's max_position_embeddings), a checkpoint whose
config disagrees with its weights, a junk .gguf, a chat template that tries to leave jinja's sandbox.

Same shape as tests/runs/test_probe_inputs.py, whose one-interpreter batch runs the rows: each row
expects a non-zero exit, exactly one `error:` line naming what is wrong, no traceback, and its
folder exactly as it was (every file's bytes; the lock file inside a checkpoint folder may be
re-taken), so nothing outside the folders a run owns is written or deleted, nothing already
written is lost, and no payload runs. `{tmp}` is the row's folder; `{ck}` a copy of a finished
tiny training run's checkpoint folder there (4 steps, checkpoints at 2 and 4).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from test_probe_inputs import assert_one_error_line, run_probes

from bindexp.io.locks import LOCK_FILE

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--n_layers=1", "--d_model=16", "--n_heads=2", "--d_ff=32", "--seq_len=3", "--hops=[1]", "--spacing=compact",
        "--n_eval=8", "--batch_size=4", "--progress=False", "--wandb_mode=disabled", "--warmup_steps=1", "--threads=1",
        "--steps=4", "--checkpoint_every=2"]
TRAIN = ["train.py", *TINY, "--output_dir={tmp}/out"]
RESUME = [*TRAIN, "--checkpoint_dir={tmp}/ck", "--resume=True"]
MODEL = ["--model={tmp}/model", "--wandb_mode=disabled", "--output_dir={tmp}/out", "--progress=False"]
PAIRS = [*MODEL, "--seq_len=12", "--hops=1", "--num_programs=2", "--shots=0", "--only_correct=False",
         "--spacing=compact"]
EVAL = ["eval.py", *MODEL, "--seq_len=[12]", "--num_programs=2", "--spacing=compact"]
MARKER = "escaped"


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


_TRAINED: dict[str, Path] = {}


def _trained(family: str) -> Callable[[Path], None]:
    """A tiny checkpoint of `family` trained on 3-line programs with 32 positions, copied to tmp/model."""
    def setup(tmp: Path) -> None:
        if family not in _TRAINED:
            from bindexp.jobs.train import TrainSettings, run_train
            from bindexp.runs.settings import parse_settings

            made = tmp.parent / f"trained-{family}"
            outcome = run_train(parse_settings(TrainSettings, [
                f"--model={family}", "--max_positions=32", "--n_layers=1", "--d_model=16", "--n_heads=2", "--d_ff=32",
                "--seq_len=3", "--hops=[1]", "--spacing=compact", "--n_eval=8", "--batch_size=4", "--steps=2",
                "--warmup_steps=1", "--progress=False", "--wandb_mode=disabled", "--threads=1",
                f"--output_dir={made}", f"--checkpoint_dir={made / 'ck'}"]))
            _TRAINED[family] = outcome.checkpoint
        shutil.copytree(_TRAINED[family], tmp / "model")
    return setup


def _resized_config(tmp: Path) -> None:
    _trained("gpt2")(tmp)
    config = json.loads((tmp / "model" / "config.json").read_text())
    (tmp / "model" / "config.json").write_text(json.dumps({**config, "n_embd": 32}))


def _junk_gguf(tmp: Path) -> None:
    (tmp / "model.gguf").write_bytes(b"this is not a GGUF file\n" * 10)


def _escaping_template(tmp: Path) -> None:
    from bindexp.models.tiny import tiny_random_model

    model, tokenizer = tiny_random_model("llama", 0)
    tokenizer.chat_template = ("{{ ''.__class__.__mro__[1].__subclasses__()[0].__init__.__globals__['os']"
                               f".system('touch {MARKER}') }}}}{{{{ messages[0]['content'] }}}}")
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")


LIMIT_GPT2 = "exceeds the 32 positions of"
MODEL_PROBES = [
    Probe("eval: prompts past a GPT-2 checkpoint's positions", EVAL, _trained("gpt2"), "(n_positions=32)"),
    Probe("patch: prompts past a GPT-2 checkpoint's positions", ["patch.py", *PAIRS], _trained("gpt2"), LIMIT_GPT2),
    Probe("lens: prompts past a GPT-2 checkpoint's positions", ["lens.py", *PAIRS], _trained("gpt2"), LIMIT_GPT2),
    Probe("attention: prompts past a GPT-2 checkpoint's positions", ["attention.py", *PAIRS], _trained("gpt2"),
          LIMIT_GPT2),
    Probe("locate: prompts past a GPT-2 checkpoint's positions", ["locate.py", *PAIRS], _trained("gpt2"), LIMIT_GPT2),
    Probe("eval: prompts past a Llama checkpoint's positions", EVAL, _trained("llama"), "(max_position_embeddings=32)"),
    Probe("eval: a config that disagrees with the weights", EVAL, _resized_config,
          "config.json and model.safetensors disagree"),
    Probe("patch: a config that disagrees with the weights", ["patch.py", *PAIRS], _resized_config,
          "config.json and model.safetensors disagree"),
    Probe("eval: a junk .gguf", [*EVAL, "--model={tmp}/model.gguf"], _junk_gguf, "is not a GGUF file"),
    Probe("lens: a junk .gguf", ["lens.py", *PAIRS, "--model={tmp}/model.gguf"], _junk_gguf, "is not a GGUF file"),
    Probe("eval: a chat template that leaves its sandbox", ["eval.py", *MODEL, "--chat=True", "--num_programs=2",
                                                            "--seq_len=[4]"], _escaping_template,
          "the tokenizer's chat template failed (SecurityError"),
]


def _tree(folder: Path) -> dict[str, str]:
    """Every file's sha256 by path (the lock file: present, its content aside)."""
    return {str(p.relative_to(folder)): ("lock" if p.name == LOCK_FILE else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Path, dict, dict]]:
    return run_probes(PROBES + MODEL_PROBES, tmp_path_factory, _tree)


@pytest.mark.parametrize("probe", PROBES + MODEL_PROBES, ids=[p.name for p in PROBES + MODEL_PROBES])
def test_a_bad_input_file_is_one_error_line_and_changes_nothing(probe, outcomes):
    tmp, before, result = outcomes[probe.name]
    assert_one_error_line(result["rc"], result["stderr"], probe.says)
    assert _tree(tmp) == before, "the run wrote or deleted something"
    assert not (tmp.parent / "x").exists() and not (tmp / MARKER).exists()
