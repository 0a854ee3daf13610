"""Settings parse every value form `wandb agent` produces; bad settings give one line."""

import pytest
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from bindexp.jobs.evaluate import EvalSettings
from bindexp.runs.settings import SettingsParseError, parse_settings


def _agent_args(params: dict) -> list[str]:
    """The argument list `wandb agent` builds for these parameter values."""
    return create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})["args"]


@pytest.mark.parametrize(
    "params",
    [
        {"seq_len": 16, "hops": 2, "num_programs": 7},
        {"shots": None, "distractor_chains": None, "group": None},
        {"rebinding": True, "chat": False, "progress": False},
        {"hops": [1, 2, 3], "seq_len": [8, 16]},
        {"tags": ["sweep", "cpu smoke"], "model": "Qwen/Qwen3-0.6B"},
        {"quantization": "4bit", "dtype": "bfloat16", "wandb_mode": "disabled"},
        {"max_distractor_depth": 4, "spacing": "compact", "seed": 12},
    ],
)
def test_agent_formatted_values_parse_back(params):
    settings = parse_settings(EvalSettings, _agent_args(params))
    for key, value in params.items():
        got = getattr(settings, key)
        if key in ("hops", "seq_len") and isinstance(value, int):
            value = [value]
        assert got == value, (key, got, value)


def test_environment_variables_use_the_prefix(monkeypatch):
    monkeypatch.setenv("SEED", "99")  # unrelated variable must not leak in
    monkeypatch.setenv("BINDEXP_NUM_PROGRAMS", "5")
    settings = parse_settings(EvalSettings, [])
    assert settings.seed == 0 and settings.num_programs == 5


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--hops=5"], "hops"),
        (["--hops=0"], "hops"),
        (["--seq_len=0"], "seq_len"),
        (["--num_programs=-1"], "num_programs"),
        (["--no_such_setting=1"], "no_such_setting"),
        (["--quantization=3bit"], "quantization"),
        (["--rebinding"], "rebinding"),
    ],
)
def test_bad_settings_are_one_line(argv, fragment):
    with pytest.raises(SettingsParseError) as err:
        parse_settings(EvalSettings, argv)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_settings_dump_to_json_and_back():
    settings = parse_settings(EvalSettings, ["--hops=[1, 4]", "--tags=[a]", "--shots=3"])
    again = EvalSettings(**settings.model_dump(mode="json"))
    assert again == settings
