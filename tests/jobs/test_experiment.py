"""The notebook API runs one evaluation per model and slices the results."""

import matplotlib

from bindexp.jobs.evaluate import EvalSettings
from bindexp.jobs.experiment import Experiment

matplotlib.use("Agg")


def test_experiment_across_models_and_lengths(tmp_path):
    settings = EvalSettings(seq_len=[3, 5], hops=[1, 2], num_programs=4, wandb_mode="disabled",
                            output_dir=str(tmp_path), progress=False)
    res = Experiment(["tiny-random-llama", "tiny-random-qwen3"], settings).run()
    assert len(res.results) == 2 * 2 * 2 * 4
    table = res.accuracy(["model", "seq_len"])
    for row in table.to_dict("records"):
        group = res.results[(res.results.model == row["model"]) & (res.results.seq_len == row["seq_len"])]
        assert row["n"] == len(group) == 8
        assert row["accuracy"] == group["correct"].mean()
    failures = res.failures(model="tiny-random-qwen3", seq_len=5, hops=2)
    assert not failures["correct"].any()
    assert set(failures["model"]) <= {"tiny-random-qwen3"} and set(failures["seq_len"]) <= {5}
    expected = (~res.results["correct"] & (res.results.model == "tiny-random-qwen3")
                & (res.results.seq_len == 5) & (res.results.hops == 2)).sum()
    assert len(failures) == expected
    figure = res.plot_accuracy(x="seq_len")
    assert len(figure.axes[0].get_legend().get_texts()) == 2
