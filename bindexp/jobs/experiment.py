"""Notebook API: one evaluation per model, results side by side.

    from bindexp.jobs.experiment import Experiment
    from bindexp.runs.settings import EvalSettings

    exp = Experiment(["smollm2-135m", "tiny-random-llama"],
                     EvalSettings(seq_len=[4, 8, 16], hops=[1, 2], shots=3, wandb_mode="disabled"))
    res = exp.run()
    res.accuracy(["model", "seq_len"])     # with 95% intervals
    res.plot_accuracy(x="seq_len")         # one line per model
    res.failures(seq_len=16, hops=2)       # the programs a model got wrong
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

from bindexp.jobs.evaluate import EvalSettings, run_eval
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.plots.accuracy import accuracy_table, integer_ticks, plot_accuracy
from bindexp.plots.figure import new_figure


@dataclasses.dataclass
class ExperimentResults:
    results: pd.DataFrame  # one row per (model, program)

    def accuracy(self, by: Sequence[str] = ("model", "seq_len")) -> pd.DataFrame:
        return accuracy_table(self.results, list(by))

    def plot_accuracy(self, x: str = "seq_len", ax: Any = None):
        """Accuracy against `x` with 95% intervals, one line per model, on `ax` (default: a new
        figure, made without pyplot); returns the figure."""
        if ax is None:
            ax = new_figure(5, 3.5).subplots()
        plot_accuracy(ax, accuracy_table(self.results, ["model", x]), x, line="model")
        integer_ticks(ax, self.results[x])
        ax.set_ylabel("accuracy (95% Wilson interval)")
        return ax.figure

    def failures(self, *, model: str | None = None, seq_len: int | None = None,
                 hops: int | None = None) -> pd.DataFrame:
        """Programs answered wrongly, optionally only for one model, length or hop count."""
        keep = ~self.results["correct"]
        for column, value in (("model", model), ("seq_len", seq_len), ("hops", hops)):
            if value is not None:
                keep &= self.results[column] == value
        return self.results[keep]


@dataclasses.dataclass
class Experiment:
    """The same evaluation settings run for several models (each its own W&B run)."""

    models: Sequence[str]
    settings: EvalSettings = dataclasses.field(default_factory=EvalSettings)

    def run(self, cache: ModelCache = MODEL_CACHE) -> ExperimentResults:
        frames = []
        for model in self.models:
            settings = self.settings.model_copy(update={"model": model})
            frames.append(run_eval(settings, cache).results)
        return ExperimentResults(pd.concat(frames, ignore_index=True))
