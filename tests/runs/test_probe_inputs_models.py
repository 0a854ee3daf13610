"""Model files and prompts a run cannot use (issue 22), through the real command lines: prompts
longer than a trained checkpoint's positions (GPT-2's n_positions, Llama's max_position_embeddings),
a checkpoint whose config disagrees with its weights, a junk .gguf, a chat template that tries to
leave jinja's sandbox. Same shape as tests/runs/test_probe_inputs.py (whose batch runs the rows):
a non-zero exit, one `error:` line naming the problem, no traceback, nothing written, and the
payload of the template never runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from test_probe_inputs import _BATCH

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["--model={tmp}/model", "--wandb_mode=disabled", "--output_dir={tmp}/out", "--progress=False"]
PAIRS = [*COMMON, "--seq_len=12", "--hops=1", "--num_programs=2", "--shots=0", "--only_correct=False",
         "--spacing=compact"]
EVAL = ["eval.py", *COMMON, "--seq_len=[12]", "--num_programs=2", "--spacing=compact"]
MARKER = "escaped"


class Probe(NamedTuple):
    name: str
    argv: list[str]
    setup: Callable[[Path], None]
    says: str


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
PROBES = [
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
    Probe("eval: a chat template that leaves its sandbox", ["eval.py", *COMMON, "--chat=True", "--num_programs=2",
                                                            "--seq_len=[4]"], _escaping_template,
          "the tokenizer's chat template failed (SecurityError"),
]


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Path, set[str], dict]]:
    rows, folders = [], {}
    for probe in PROBES:
        tmp = tmp_path_factory.mktemp("probe")
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
def test_a_model_or_prompt_the_run_cannot_use_is_one_error_line(probe, outcomes):
    tmp, before, result = outcomes[probe.name]
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert result["rc"] != 0, result["stderr"]
    assert "Traceback" not in result["stderr"], result["stderr"]
    assert len(errors) == 1 and probe.says in errors[0], result["stderr"]
    assert _tree(tmp) == before, "the run wrote something"
    assert not (tmp / MARKER).exists()
