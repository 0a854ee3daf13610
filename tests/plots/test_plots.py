"""The one accuracy plotter: the points it draws, and plotting never switches matplotlib's backend."""

import ast
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from bindexp.interventions.results.grid import Grid
from bindexp.io.tables import write_figure
from bindexp.jobs.experiment import ExperimentResults
from bindexp.plots.accuracy import accuracy_figure, accuracy_table, aggregate_figures, plot_accuracy
from bindexp.plots.figure import new_figure
from bindexp.results.tables import aggregate

ROOT = Path(__file__).resolve().parents[2]

# hops 1: 1 of 2 right, hops 2: 2 of 2 right (seq_len 4); hops 1: 0 of 1 right (seq_len 6)
RESULTS = pd.DataFrame({"model": ["m"] * 5, "hops": [1, 1, 2, 2, 1], "seq_len": [4, 4, 4, 4, 6],
                        "correct": [True, False, True, True, False]})


def test_plot_accuracy_draws_one_line_per_value_with_the_accuracies():
    ax = new_figure(4, 3).subplots()
    plot_accuracy(ax, accuracy_table(RESULTS, ["seq_len", "hops"]), "hops", line="seq_len")
    lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}  # one errorbar set per line
    assert set(lines) == {"seq_len=4", "seq_len=6"} == {t.get_text() for t in ax.get_legend().get_texts()}
    assert list(lines["seq_len=4"].get_xdata()) == [1.0, 2.0] and list(lines["seq_len=4"].get_ydata()) == [0.5, 1.0]
    assert list(lines["seq_len=6"].get_ydata()) == [0.0]


def test_plotting_keeps_the_backend_of_the_caller(tmp_path):
    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        write_figure(accuracy_figure(RESULTS, title="m"), tmp_path / "accuracy.png")
        ExperimentResults(RESULTS).plot_accuracy(x="seq_len")
        tidy = RESULTS.assign(run_id="r", n=1, correct=RESULTS["correct"].astype(int))
        for panel, figure in aggregate_figures(aggregate(tidy, ["model", "hops", "seq_len"])).items():
            write_figure(figure, tmp_path / f"accuracy_by_{panel}.png")
        values = {"normalized_effect": np.array([[0.0, 1.0], [0.5, 0.25]])}
        grid = Grid(("layer", "role"), {"layer": [0, 1], "role": ["a", "b"]}, values, values, values, np.ones((2, 2)))
        grid.plot().savefig(tmp_path / "heatmap.png")
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(before)
    for name in ("accuracy.png", "accuracy_by_model.png", "accuracy_by_hops.png", "heatmap.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_no_library_module_switches_the_backend():
    calls = []
    for path in (ROOT / "bindexp").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "matplotlib"):
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not calls, f"matplotlib.use in the library: {calls}"


@pytest.mark.parametrize("value, text", [(2.0, "2"), (np.nan, "–"), (None, "–"), ("qwen", "qwen"), (2.5, "2.5")])
def test_labels_of_values(value, text):
    from bindexp.plots.accuracy import value_text

    assert value_text(value) == text


def test_accuracy_plot_explains_itself(tmp_path):
    results = RESULTS.assign(task="binding", heuristic=[True, False, False, False, True])
    ax = accuracy_figure(results, title="m", task="binding", shots=3).axes[0]
    assert ax.get_title() == "m on binding, 3-shot, n=5 programs"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    assert "Wilson" in ax.get_ylabel()
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["chance (1/10)"].get_ydata()) == [0.1, 0.1]
    heuristic = lines["line-1/line-2 heuristic"]  # share of programs whose answer is on line 1 or 2, per hops
    assert list(heuristic.get_xdata()) == [1.0, 2.0] and list(heuristic.get_ydata()) == [2 / 3, 0.0]


def test_one_hops_value_gives_one_integer_tick(tmp_path):
    from bindexp.plots.accuracy import integer_ticks

    ax = new_figure(4, 3).subplots()
    plot_accuracy(ax, accuracy_table(RESULTS[RESULTS["hops"] == 2], ["hops"]), "hops")
    integer_ticks(ax, [2, 2])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2"]


def test_training_plot_has_a_panel_per_group_the_loss_on_a_log_scale_and_the_phase_lines():
    from bindexp.plots.training import plot_training

    history = [{"train/step": step, "validation/accuracy": acc, "validation/accuracy_heuristic_wrong": acc / 2,
                "validation/accuracy_hops1": acc, "validation/accuracy_hops2": acc, "heldout/accuracy": acc,
                "longer_len12/accuracy": acc / 3} for step, acc in [(100, 0.1), (200, 0.6), (300, 1.0)]]
    history += [{"train/step": step, "train/loss": 2.0 / step} for step in (10, 20, 300)]
    figure = plot_training(history, 0.55, {"past_heuristic_step": 200, "systematic_step": None}, "a title")
    validation, hops, general, loss = figure.axes
    assert [line.get_label() for line in validation.get_lines()][:2] == [
        "validation/accuracy", "validation/accuracy_heuristic_wrong"]
    assert list(validation.get_lines()[0].get_xdata()) == [100, 200, 300]
    assert not any("hops" in line.get_label() for line in validation.get_lines())
    assert {line.get_label() for line in hops.get_lines()} >= {"validation/accuracy_hops1", "validation/accuracy_hops2"}
    assert {line.get_label() for line in general.get_lines()} >= {"heldout/accuracy", "longer_len12/accuracy"}
    assert loss.get_yscale() == "log" and list(loss.get_lines()[0].get_xdata()) == [10, 20, 300]
    plateau = [line for line in validation.get_lines() if line.get_linestyle() == ":"]
    assert len(plateau) == 1 and list(plateau[0].get_ydata()) == [0.55, 0.55]
    for ax in figure.axes:  # one dashed line at step 200 on every panel; none for the phase not reached
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert [list(line.get_xdata()) for line in dashed] == [[200, 200]]


def test_training_plot_leaves_out_groups_without_keys():
    from bindexp.plots.training import plot_training

    history = [{"train/step": 10, "validation/accuracy": 0.5, "validation/accuracy_hops1": 0.5}]
    figure = plot_training(history, None, {"past_heuristic_step": None, "systematic_step": None})
    assert [ax.get_ylabel() for ax in figure.axes] == ["validation\naccuracy", "by hops\naccuracy", "training loss"]
