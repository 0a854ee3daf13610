"""The benchmark scripts run end to end on the tiny model and print their measures (speed figures
themselves are measured on an idle machine, never asserted here), and `timed` keeps the fastest run."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.cli  # the command-line tier: scripts run as a user runs them


def _main(name: str, argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[2] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


@pytest.mark.parametrize("name, argv, printed", [
    ("bench_eval", ["--num_programs=4", "--seq_len=5", "--shots=1", "--batch_size=2"],
     ["ratio vs bare forward", "predictions agree"]),
    ("bench_analyses", ["--programs=4", "--seq_len=5", "--shots=1", "--das_steps=2", "--das_batch_size=2", "--k=2"],
     ["attention weights", "logit lens", "DAS step", "EAP, all", "EAP-IG (5 steps)", "path patching into q:2.0",
      "path patching into the logits", "exact path patching of every edge"]),
])
def test_bench_script_runs_on_the_tiny_model(name, argv, printed, capsys):
    assert _main(name, ["--model=tiny-random-llama", "--device=cpu", *argv]) in (0, None)
    out = capsys.readouterr().out
    assert all(text in out for text in printed), out


def test_timed_returns_the_last_result_and_the_fastest_of_its_runs(monkeypatch):
    from bindexp.models import bench

    clock = iter([0.0, 5.0, 10.0, 12.0, 20.0, 29.0])  # runs of 5, 2 and 9 seconds
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    calls = []
    result, seconds = bench.timed(lambda: calls.append(1) or len(calls), repeats=3)
    assert (result, seconds, len(calls)) == (3, 2.0, 3)
