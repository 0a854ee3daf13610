"""The patch heatmap: colour limits, marks for unclear and not-run cells, integer layer ticks."""

import numpy as np

from bindexp.interventions.results.grid import Grid
from bindexp.io.grids import write_grid
from bindexp.plots.heatmap import MIN_BOUND


def _grid(values, low=None, high=None, not_run=None, metric="normalized_effect", extra=None):
    values = np.asarray(values, dtype=float)
    layers, cols = values.shape
    mean = {metric: values, **(extra or {})}
    lows = {m: (np.asarray(low, dtype=float) if low is not None and m == metric else v - 0.1) for m, v in mean.items()}
    highs = {m: (np.asarray(high, dtype=float) if high is not None and m == metric else v + 0.1) for m, v in mean.items()}
    counts = {} if not_run is None else {"not_run": np.asarray(not_run)}
    return Grid(("layer", "role"), {"layer": list(range(layers)), "role": [f"r{j}" for j in range(cols)]},
                mean, lows, highs, np.full(values.shape, 4), counts, [f"t{j}" for j in range(cols)])


def _limits(figure):
    image = figure.axes[0].images[0]
    return image.get_clim()


def test_normalized_effect_has_fixed_limits_and_says_so():
    figure = _grid([[0.01, 0.02], [0.03, 0.04]]).plot("normalized_effect")
    assert _limits(figure) == (-1.0, 1.0)
    assert "fixed scale -1 to 1" in figure.axes[1].get_ylabel()  # the colourbar


def test_tiny_effects_are_not_blown_up_and_large_ones_fit():
    tiny = _grid([[1e-5, -2e-5], [0.0, 1e-6]], metric="p_drop").plot("p_drop")
    assert _limits(tiny) == (-MIN_BOUND, MIN_BOUND)
    large = _grid([[3.0, -5.0], [0.0, 1.0]], metric="logit_diff").plot("logit_diff")
    assert _limits(large) == (-5.0, 5.0)


def test_not_run_cells_are_hatched_and_unclear_cells_dotted():
    values = [[0.0, 0.9], [0.0, 0.8], [0.5, 0.7]]
    low = [[0.0, 0.8], [0.0, 0.7], [-0.2, 0.6]]  # the (2, 0) cell's interval includes 0
    high = [[0.0, 1.0], [0.0, 0.9], [0.9, 0.8]]
    not_run = [[4, 0], [4, 0], [0, 0]]  # column 0 of layers 0-1: no pair ran it
    figure = _grid(values, low, high, not_run).plot()
    ax = figure.axes[0]
    hatched = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches if p.get_hatch()]
    assert sorted(hatched) == [(0.0, 0.0), (0.0, 1.0)]
    (dots,) = ax.collections
    assert [tuple(xy) for xy in dots.get_offsets()] == [(0.0, 2.0)]  # not the hatched ones


def test_cells_within_the_noise_floor_are_ringed():
    floor = np.full((2, 2), 0.2)
    values = np.array([[0.1, 0.9], [0.5, 0.15]])
    grid = _grid(values, low=values - 0.01, high=values + 0.01, extra={"noise_floor": floor})  # no CI crosses 0
    ax = grid.plot().axes[0]
    (rings,) = ax.collections
    assert sorted(tuple(xy) for xy in rings.get_offsets()) == [(0.0, 0.0), (1.0, 1.0)]  # (x=column, y=layer)


def test_layer_ticks_are_the_integer_layers_and_wide_grids_stay_readable():
    grid = _grid(np.zeros((30, 120)))
    figure = grid.plot()
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in range(30)]
    assert figure.get_size_inches()[0] <= 16 and figure.get_size_inches()[1] <= 10
    assert ax.get_xlabel().startswith("role") and "first pair" in ax.get_xlabel()


def test_not_run_counts_survive_save_and_load(tmp_path):
    grid = _grid([[0.0, 1.0]], not_run=[[3, 0]])
    write_grid(grid, tmp_path)
    assert Grid.load(tmp_path).counts["not_run"].tolist() == [[3, 0]]
